//! The leak check the runner applies to itself finds each kind of leak.
//! In a binary of its own, one test at a time: fds are counted process-wide.

use std::os::unix::net::UnixListener;
use std::process::Command;

use shmem_host::vm::leaks::Snapshot;

#[test]
fn the_leak_check_finds_a_child_an_fd_a_socket_and_a_temp_dir() {
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let snap = Snapshot::take();
    assert_eq!(snap.leaks_since(dir.path()), Vec::<String>::new(), "clean at first");
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    // Until the child has exec'd, its cmdline is still ours.
    let cmdline = format!("/proc/{}/cmdline", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read(&cmdline).unwrap_or_default().starts_with(b"sleep") {
        assert!(std::time::Instant::now() < deadline, "sleep never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let file = std::fs::File::create(dir.path().join("held-open")).unwrap();
    let listener = UnixListener::bind(dir.path().join("left.sock")).unwrap();
    std::fs::create_dir(dir.path().join("shmem-backend-x")).unwrap();
    let leaks = snap.leaks_since(dir.path());
    let _ = child.kill();
    let _ = child.wait();
    drop((file, listener));
    let text = leaks.join("\n");
    assert!(text.contains("child process") && text.contains("sleep 30"), "{text}");
    assert!(text.contains("held-open") && text.contains("socket:["), "{text}");
    assert!(text.contains("left.sock"), "{text}");
    assert!(text.contains("temp dir") && text.contains("shmem-backend-x"), "{text}");
}

#[test]
fn the_leak_check_finds_what_a_child_left_running_under_it() {
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let snap = Snapshot::take();
    // A wrapper that does not exec: the program it runs is our grandchild.
    let mut wrapper = Command::new("sh").args(["-c", "sleep 31; :"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut wrapped = wrapper.id();
    while (wrapped == wrapper.id()
        || !std::fs::read(format!("/proc/{wrapped}/cmdline")).unwrap_or_default().starts_with(b"sleep"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
        wrapped = shmem_host::spawn::leaf(wrapper.id());
    }
    let named = format!("child process {wrapped} (sleep 31)");
    let leaks = snap.leaks_since(dir.path());
    shmem_host::spawn::tree(wrapper.id()).into_iter().rev().for_each(|p| {
        // SAFETY: killing processes this test started.
        unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
    });
    let _ = wrapper.wait();
    assert!(leaks.contains(&named), "the wrapped program is not named ({named}): {leaks:?}");
}

/// The model half of an own boot checks itself for leaks too (in this
/// binary: fds are counted process-wide, and the test above may not run
/// beside it).
#[test]
fn the_model_half_of_an_own_boot_is_leak_checked() {
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let suite = shmem_host::vm::scenario::SuiteFile::load(&root.join("tests/suite.toml")).unwrap();
    let scn = shmem_host::vm::scenario::Scenario::load_dir(&root.join("tests/scenarios"))
        .unwrap()
        .into_iter()
        .find(|s| s.name == "rw-basic")
        .unwrap();
    let (dir, sockets) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let device = (suite.device.spec(), suite.device.layout());
    let (res, _) = shmem_host::vm::own_boot::model_half(&device, &scn, dir.path(), sockets.path());
    let checks = res.unwrap();
    let leak = checks.iter().find(|c| c.check == "no-leaks").expect("no-leaks recorded");
    assert!(leak.passed, "{leak:?}");
}

static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
