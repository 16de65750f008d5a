//! The ELF loader on arbitrary bytes: must return Ok or a clean error, never panic or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kvmbox::fuzzing::parse_elf(data);
});
