//! Bad device specs are refused with a message that names the bad value.

use shmem_host::server::BackendServer;
use shmem_host::spec::{DeviceSpec, SpecError, pack_regions, parse_size};

fn refused(regions: Vec<u64>) -> String {
    DeviceSpec::new(45, 1, regions).unwrap_err().to_string()
}

#[test]
fn size_not_a_page_multiple_is_named() {
    let msg = refused(vec![0x10000, 0x1800]);
    assert!(msg.contains("shmid 1") && msg.contains("0x1800"), "{msg}");
}

#[test]
fn total_not_a_power_of_two_is_named() {
    let msg = refused(vec![0x10000, 0x20000]);
    assert!(msg.contains("0x30000") && msg.contains("power of two"), "{msg}");
}

#[test]
fn no_region_at_all_is_refused() {
    assert_eq!(DeviceSpec::new(45, 1, vec![]).unwrap_err(), SpecError::NoRegions);
    assert_eq!(DeviceSpec::new(45, 1, vec![0, 0]).unwrap_err(), SpecError::NoRegions);
}

#[test]
fn shmid_of_256_or_more_is_refused() {
    let err = DeviceSpec::parse_regions("256=4K").unwrap_err();
    assert!(err.to_string().contains("shmid 256"), "{err}");
    assert!(refused(vec![0x1000; 257]).contains("257 regions"));
}

#[test]
fn zero_virtio_id_and_zero_queues_are_refused() {
    assert_eq!(DeviceSpec::new(0, 1, vec![0x1000]).unwrap_err(), SpecError::ZeroVirtioId);
    assert_eq!(DeviceSpec::new(45, 0, vec![0x1000]).unwrap_err(), SpecError::ZeroQueues);
}

#[test]
fn region_lists_parse_by_position_and_by_shmid() {
    assert_eq!(DeviceSpec::parse_regions("1M,0,64K").unwrap(), vec![1 << 20, 0, 0x10000]);
    assert_eq!(DeviceSpec::parse_regions("2=0x2000").unwrap(), vec![0, 0, 0x2000]);
    let err = parse_size("12Q").unwrap_err().to_string();
    assert!(err.contains("\"12Q\""), "{err}");
}

#[test]
fn regions_are_packed_back_to_back_in_shmid_order() {
    let spec = DeviceSpec::new(45, 1, vec![0x10000, 0, 0x30000]).unwrap();
    assert_eq!(pack_regions(&spec.regions), vec![(0, 0, 0x10000), (2, 0x10000, 0x30000)]);
    assert_eq!(spec.total_size(), 0x40000);
}

#[test]
fn the_server_refuses_a_bad_spec_before_listening() {
    let bad = DeviceSpec { virtio_id: 45, num_queues: 1, regions: vec![0x3000] };
    let err = BackendServer::start(bad).err().expect("refused").to_string();
    assert!(err.contains("0x3000"), "{err}");
}
