//! The stand-alone `shmem-backend` binary: serves one frontend over a real
//! socket and reports what it was told; bad arguments are refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmem_host::model::{Faults, ModelFrontend};

fn wait_with_timeout(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shmem-backend did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_serves_one_frontend_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("be.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmem-backend"))
        .args(["--socket", sock.to_str().unwrap(), "--regions", "0=64K,1=64K"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "socket never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    let model = ModelFrontend::connect(&sock, 1, Faults::default()).unwrap();
    assert_eq!(model.region_windows(), vec![(0, 0, 0x10000), (1, 0x10000, 0x10000)]);
    drop(model);
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("GET_SHMEM_CONFIG"), "{out}");
    assert!(!sock.exists(), "socket left behind");
}

#[test]
fn binary_refuses_a_bad_region_list_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmem-backend"))
        .args(["--socket", "/nonexistent/x.sock", "--regions", "64K,128K"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0x30000") && err.contains("power of two"), "{err}");
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

#[test]
fn a_backend_behind_a_wrapper_that_does_not_exec_is_stopped_with_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("wrapper.sh");
    // No `exec`: the shell stays the parent of the backend it runs.
    let script = format!(
        "#!/bin/sh\n{} --socket \"$1\" --regions 0=64K\necho the backend ended\n",
        env!("CARGO_BIN_EXE_shmem-backend")
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("be.sock");
    let backend = shmem_host::conformance::process::BackendProcess::start(
        &format!("{} {{socket}}", wrapper.display()),
        &sock,
        dir.path(),
        Duration::from_secs(10),
    )
    .expect("the wrapped backend listens");
    let processes = backend.processes();
    assert_eq!(processes.len(), 2, "the wrapper and the backend: {processes:?}");
    drop(backend);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes.iter().all(|&p| gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        processes.iter().all(|&p| gone(p)),
        "still running after drop: {:?}",
        processes.iter().filter(|&&p| !gone(p)).collect::<Vec<_>>()
    );
}
