//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` on a hash map, which aya 0.14 does not wrap: one `bpf(2)` call
//! moves up to `chunk` entries (all CPUs' values of a per-CPU map) into caller-owned buffers and
//! removes them. Also the one `bpf(2)` entry point (`sys_bpf`) of the eBPF source, which `counters`
//! uses too; everything above it sees plain byte slices.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `enum bpf_cmd` value of `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (stable kernel ABI since 5.6).
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// `bpf(2)` with one member of `union bpf_attr`; a negative return is the OS error.
///
/// # Safety
/// `attr` must be the member that `command` reads, and every pointer in it must be valid for the
/// whole call (buffers of the sizes the map was created with).
pub(super) unsafe fn sys_bpf<A>(command: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: upheld by the caller; `attr` is a live, writable value of its own size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reusable buffers for draining one map, sized for `chunk` entries per call.
#[derive(Debug)]
pub(crate) struct BatchBuffers {
    key_size: usize,
    /// Bytes of one entry's value: `round_up(value_size, 8) * cpus` for a per-CPU map.
    value_stride: usize,
    chunk: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl BatchBuffers {
    /// `cpus` is the number of possible CPUs for a per-CPU map, 1 otherwise.
    pub(crate) fn new(
        key_size: usize,
        value_size: usize,
        cpus: usize,
        chunk: usize,
    ) -> BatchBuffers {
        let value_stride = value_size.div_ceil(8) * 8 * cpus.max(1);
        let chunk = chunk.max(1);
        BatchBuffers {
            key_size,
            value_stride,
            chunk,
            keys: vec![0; key_size * chunk],
            values: vec![0; value_stride * chunk],
        }
    }

    pub(crate) fn value_stride(&self) -> usize {
        self.value_stride
    }

    /// Moves every entry of the map out of the kernel, calling `visit(key, values)` for each, and
    /// returns how many `bpf(2)` calls it took. Entries added while it runs may be left for the next
    /// drain. An error leaves the remaining entries in the map.
    pub(crate) fn drain(
        &mut self,
        map: BorrowedFd<'_>,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> io::Result<u32> {
        let mut calls = 0;
        // Hash maps use a bucket index as the batch token; 8 bytes covers it.
        let mut token_in = [0u8; 8];
        let mut token_out = [0u8; 8];
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    token_in.as_mut_ptr() as u64
                },
                out_batch: token_out.as_mut_ptr() as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: u32::try_from(self.chunk).unwrap_or(u32::MAX),
                map_fd: u32::try_from(map.as_raw_fd()).map_err(|_| io::ErrorKind::InvalidInput)?,
                ..BatchAttr::default()
            };
            // SAFETY: `attr` is a valid `bpf_attr.batch`; the key and value buffers hold `chunk`
            // entries of the sizes the map was created with (checked by the caller), the tokens hold
            // 8 bytes, and all of them outlive the call.
            let result = unsafe { sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr) };
            calls += 1;
            let done = match result {
                Ok(_) => false,
                // ENOENT: the walk reached the end; `count` still says how many were copied.
                Err(error) if error.raw_os_error() == Some(libc::ENOENT) => true,
                Err(error) => return Err(error),
            };
            let copied = (attr.count as usize).min(self.chunk);
            for i in 0..copied {
                let key = &self.keys[i * self.key_size..(i + 1) * self.key_size];
                let value = &self.values[i * self.value_stride..(i + 1) * self.value_stride];
                visit(key, value);
            }
            if done {
                return Ok(calls);
            }
            token_in = token_out;
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_round_up_per_cpu_values() {
        let b = BatchBuffers::new(16, 60, 4, 10);
        assert_eq!(b.value_stride(), 64 * 4);
        assert_eq!(b.keys.len(), 160);
        assert_eq!(b.values.len(), 2560);
        let b = BatchBuffers::new(4, 8, 0, 0);
        assert_eq!(b.value_stride(), 8);
        assert_eq!(b.chunk, 1);
    }

    #[test]
    fn a_bad_fd_is_an_error_not_a_panic() {
        use std::os::fd::AsFd;
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut b = BatchBuffers::new(16, 8, 1, 4);
        let result = b.drain(file.as_fd(), |_, _| panic!("no entries"));
        assert!(result.is_err());
    }
}
