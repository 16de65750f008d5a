//! Symbols of the shared objects a dynamic program has loaded, for `symbol`/`call`: found
//! through the dynamic loader's own list — `_r_debug.r_map`, the `link_map` chain ld.so keeps
//! in guest memory — so libraries loaded at start and by `dlopen` are both there, in load
//! order, and forks, resets and snapshot files need nothing of their own. Each library's
//! symbols are read once from its file, through the file policy like any guest open.

use super::*;
use crate::memory::{read_space, UserMemory};

/// At most this many objects are walked (a guest could make the chain a cycle).
const MAX_OBJECTS: usize = 4096;
/// Largest library file whose symbols are read.
const MAX_LIBRARY: u64 = 256 << 20;
/// Most library files whose symbols one machine reads: the guest names the paths, so the host
/// work and memory for lookups stay bounded. The cache outlives resets (every request after a
/// reset looks up `kvmbox_reseed`, and reading the libraries again each time would cost
/// milliseconds); a path is read once per machine.
const MAX_LIBRARIES: usize = 256;

/// `struct r_debug`: `int r_version` (padded to 8), then `struct link_map *r_map`.
const R_MAP: u64 = 8;
/// `struct link_map`: `l_addr` (load bias), `l_name`, `l_ld`, `l_next`, `l_prev`.
const L_NAME: u64 = 8;
const L_NEXT: u64 = 24;

/// Symbols of library files already read, by path (per machine).
pub(crate) type LibrarySymbols = std::sync::Mutex<HashMap<PathBuf, Arc<HashMap<String, u64>>>>;

impl Machine {
    /// Address of `name` in the first loaded shared object that defines it.
    pub(super) fn library_symbol(&self, name: &str) -> Option<u64> {
        let r_debug = self.r_debug?;
        let space = read_space(&self.space);
        let mem = UserMemory { mem: &self.mem, space: &space };
        let mut map = mem.read_u64(r_debug.checked_add(R_MAP)?).ok()?;
        for _ in 0..MAX_OBJECTS {
            if map == 0 {
                return None;
            }
            let bias = mem.read_u64(map).ok()?;
            let name_at = mem.read_u64(map.checked_add(L_NAME)?).ok()?;
            let next = mem.read_u64(map.checked_add(L_NEXT)?).ok()?;
            let path = (name_at != 0).then(|| mem.read_cstring(name_at, libc::PATH_MAX as usize).ok().flatten()).flatten();
            // The program itself has an empty name (its symbols were looked up first).
            if let Some(path) = path.filter(|p| p.starts_with(b"/")) {
                let path = PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(path));
                if let Some(value) = self.symbols_of_library(&path).get(name) {
                    return Some(bias.wrapping_add(*value));
                }
            }
            map = next;
        }
        None
    }

    /// The symbols of the library file at `path` (empty if the policy does not let the guest
    /// read it, or it is not ELF).
    fn symbols_of_library(&self, path: &Path) -> Arc<HashMap<String, u64>> {
        let mut cache = self.library_symbols.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(path) {
            return Arc::clone(s);
        }
        if cache.len() >= MAX_LIBRARIES {
            return Arc::default();
        }
        let bytes = self.linux.policy.read_file(path, MAX_LIBRARY).unwrap_or_default();
        let symbols = Arc::new(crate::elf::shared_object_symbols(&bytes));
        cache.insert(path.to_path_buf(), Arc::clone(&symbols));
        symbols
    }
}
