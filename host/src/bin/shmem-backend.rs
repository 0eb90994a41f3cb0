//! `shmem-backend`: the test-device backend as a stand-alone process, for
//! pointing your own QEMU at it. It serves one frontend, then prints what
//! that frontend told it. It maps nothing by itself.

use std::path::PathBuf;
use std::process::ExitCode;

use shmem_host::server::BackendServer;
use shmem_host::spec::DeviceSpec;

const USAGE: &str = "usage: shmem-backend --socket PATH [--regions SIZES] [--virtio-id N] [--queues N]
  --socket PATH     where to listen (its directory should be private)
  --regions SIZES   region sizes by shmid, e.g. 1M or 0=64K,1=64K (default 1M)
  --virtio-id N     virtio device id the frontend exposes (default 45)
  --queues N        number of virtqueues (default 1)";

fn parse() -> Result<(PathBuf, DeviceSpec), String> {
    let mut args = std::env::args().skip(1);
    let (mut socket, mut regions, mut virtio_id, mut queues) = (None, "1M".to_string(), 45u16, 1u16);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--regions" => regions = value()?,
            "--virtio-id" => virtio_id = value()?.parse().map_err(|e| format!("--virtio-id: {e}"))?,
            "--queues" => queues = value()?.parse().map_err(|e| format!("--queues: {e}"))?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let socket = socket.ok_or("--socket is required")?;
    let regions = DeviceSpec::parse_regions(&regions).map_err(|e| format!("--regions: {e}"))?;
    let spec = DeviceSpec::new(virtio_id, queues, regions).map_err(|e| format!("device spec: {e}"))?;
    Ok((socket, spec))
}

fn main() -> ExitCode {
    let (socket, spec) = match parse() {
        Ok(v) => v,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("shmem-backend: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match BackendServer::start_at(spec.clone(), &socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shmem-backend: cannot listen on {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    };
    println!(
        "listening on {} for one frontend; regions {:?}, virtio id {}",
        socket.display(),
        spec.regions,
        spec.virtio_id
    );
    let recorder = server.recorder().clone();
    let res = server.wait();
    let rec = recorder.lock();
    for m in &rec.messages {
        println!(
            "{:?} {} flags={:#x} size={} fds={} value={:?}",
            m.direction, m.name, m.flags, m.size, m.nfds, m.value
        );
    }
    println!("memory tables received: {}", rec.mem_tables.len());
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmem-backend: {e}");
            ExitCode::FAILURE
        }
    }
}
