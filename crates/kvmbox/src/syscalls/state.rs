//! The emulated process's state as a snapshot keeps it, and its encoding in snapshot files.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::files::{self, FdSpec, Input};
use super::mm::Mappings;
use crate::error::{Error, Result};

/// The emulated process's state as a snapshot keeps it.
#[derive(Clone)]
pub struct LinuxState {
    pub(super) mm: Mappings,
    pub(super) fds: Vec<(usize, FdSpec)>,
    pub(super) stdin: Input,
    pub(super) sigactions: super::SignalTable,
    pub(super) sigmask: u64,
    pub(super) altstack: [u64; 3],
}

impl LinuxState {
    pub(crate) fn heap(&self) -> &Mappings {
        &self.mm
    }

    pub(crate) fn encode(&self, w: &mut crate::snapfile::Writer) {
        self.mm.encode(w);
        w.u64(self.fds.len() as u64);
        for (slot, spec) in &self.fds {
            w.u64(*slot as u64);
            match spec {
                FdSpec::Stdin => w.u8(0),
                FdSpec::Stdout => w.u8(1),
                FdSpec::Stderr => w.u8(2),
                FdSpec::File { path, is_dir, offset, .. } => {
                    w.u8(3);
                    w.bytes(path.as_os_str().as_encoded_bytes());
                    w.u8(*is_dir as u8);
                    w.u64(*offset);
                }
            }
        }
        match &self.stdin {
            Input::Empty | Input::Inherit => w.u8(0),
            Input::Bytes { data, pos } => {
                w.u8(1);
                w.bytes(data);
                w.u64(*pos as u64);
            }
        }
        for a in &self.sigactions {
            for v in a {
                w.u64(*v);
            }
        }
        w.u64(self.sigmask);
        for v in self.altstack {
            w.u64(v);
        }
    }

    pub(crate) fn decode(r: &mut crate::snapfile::Reader, heap_limit: u64) -> Result<LinuxState> {
        let bad = |what: &str| Error::InvalidArgument(format!("invalid snapshot file: {what}"));
        let mm = Mappings::decode(r, heap_limit)?;
        let n = r.count(9)?;
        if n > files::MAX_FDS {
            return Err(bad("too many descriptors"));
        }
        let mut fds = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = r.u64()? as usize;
            if slot >= files::MAX_FDS {
                return Err(bad("descriptor number out of range"));
            }
            let spec = match r.u8()? {
                0 => FdSpec::Stdin,
                1 => FdSpec::Stdout,
                2 => FdSpec::Stderr,
                3 => {
                    let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
                    if !path.is_absolute() {
                        return Err(bad("relative path of an open file"));
                    }
                    FdSpec::File { path: files::normalize(&path), is_dir: r.u8()? != 0, offset: r.u64()?, handle: None }
                }
                _ => return Err(bad("unknown descriptor kind")),
            };
            fds.push((slot, spec));
        }
        let stdin = match r.u8()? {
            0 => Input::Empty,
            1 => {
                let data = r.bytes()?.to_vec();
                let pos = r.u64()? as usize;
                if pos > data.len() {
                    return Err(bad("stdin position out of range"));
                }
                Input::Bytes { data, pos }
            }
            _ => return Err(bad("unknown stdin kind")),
        };
        let mut sigactions: super::SignalTable = [[0; 4]; 65];
        for a in sigactions.iter_mut() {
            for v in a.iter_mut() {
                *v = r.u64()?;
            }
        }
        let sigmask = r.u64()?;
        let altstack = [r.u64()?, r.u64()?, r.u64()?];
        Ok(LinuxState { mm, fds, stdin, sigactions, sigmask, altstack })
    }
}
