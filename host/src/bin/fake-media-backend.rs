//! `fake-media-backend`: the fake virtio-media backend (`shmem_host::fake_media`)
//! as a process, the way backend-test runs any backend. Serves one frontend.

use std::process::ExitCode;

use shmem_host::fake_media::FakeMedia;
use shmem_host::fake_media::device::MediaFault;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

const USAGE: &str = "usage: fake-media-backend --socket-path PATH [--fault NAME]  (or --version)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let fault = match value("--fault").as_deref().map_or(Some(MediaFault::None), MediaFault::parse) {
        Some(f) => f,
        None => {
            eprintln!(
                "fake-media-backend: unknown --fault; one of {}",
                MediaFault::ALL.map(MediaFault::name).join(", ")
            );
            return ExitCode::from(2);
        }
    };
    if args.iter().any(|a| a == "--version") {
        println!("fake-media-backend {} ({})", env!("CARGO_PKG_VERSION"), fault.name());
        return ExitCode::SUCCESS;
    }
    let Some(socket) = value("--socket-path") else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), String> {
        let backend = FakeMedia::new(fault).map_err(|e| e.to_string())?;
        let mut daemon =
            VhostUserDaemon::new("fake-media".into(), backend, GuestMemoryAtomic::new(GuestMemoryMmap::new()))
                .map_err(|e| format!("{e:?}"))?;
        daemon.serve(&socket).map_err(|e| format!("{e:?}"))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-media-backend: {e}");
            ExitCode::FAILURE
        }
    }
}
