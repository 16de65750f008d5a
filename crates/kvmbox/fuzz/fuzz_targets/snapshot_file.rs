//! Snapshot-file loading on arbitrary bytes (and on mutations of a real file in the corpus).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("kvmbox-fuzz-{}.kvmsnap", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        kvmbox::fuzzing::parse_snapshot_file(&path);
    }
});
