//! mirrorfleet rebuilder: VXLAN mirror traffic (directly or inside GWLB GENEVE) -> TCP
//! reassembly -> HTTP requests.
//!
//! Subcommands: `replay` (extract requests from a capture file), `generate` (write a
//! deterministic synthetic capture and its ground truth).

use clap::{Parser, Subcommand};
use rebuilder::offline::replay::{GenerateArgs, ReplayArgs, generate_command, replay_command};
use std::io::Write;
use std::process::ExitCode;

// The daemon moves every request buffer from a receive thread to the forwarding thread;
// mimalloc frees across threads far more cheaply than the system allocator.
#[global_allocator]
static GLOBAL: Allocator = Allocator;

/// mimalloc, asked the way its own aligned entry points end up asking it. The `mimalloc`
/// crate's `MiMalloc` sends every allocation through `mi_malloc_aligned` (and
/// `mi_zalloc_aligned`, `mi_realloc_aligned`), which first tries a page of the exact size
/// with a free block at the right alignment and otherwise falls back to a generic path that
/// ends in the plain allocation whenever the alignment is "natural": at most
/// `MI_MAX_ALIGN_SIZE` (16) and not above the size (`mi_malloc_is_naturally_aligned` in
/// mimalloc v2's `src/alloc-aligned.c`). Nearly every Rust allocation is such a case
/// (alignment 1 to 8), so they go to `mi_malloc` / `mi_zalloc` / `mi_realloc` directly: on
/// the replay benchmark, ~425,000 allocations per 200,000 packets, a sixth of them through
/// the generic path (docs/engine.md, "Performance notes"). Anything else keeps the aligned
/// entry points.
struct Allocator;

/// `MI_MAX_ALIGN_SIZE` in mimalloc v2's `include/mimalloc/types.h` (x86_64 and aarch64).
const MI_MAX_ALIGN_SIZE: usize = 16;

#[inline]
fn naturally_aligned(size: usize, align: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

// SAFETY (the four functions): mimalloc's functions take any size, return null on failure,
// and return memory aligned to `align` when `naturally_aligned(size, align)` (the condition
// under which mimalloc's own aligned path returns the plain allocation); `mi_free` and the
// realloc functions take any pointer mimalloc returned, which every pointer here is.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: see above.
        unsafe {
            if naturally_aligned(size, align) {
                libmimalloc_sys::mi_malloc(size).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: see above.
        unsafe {
            if naturally_aligned(size, align) {
                libmimalloc_sys::mi_zalloc(size).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: see above.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: see above.
        unsafe {
            if naturally_aligned(new_size, align) {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

/// mimalloc's arenas committed on demand (`arena_eager_commit = 0`) unless
/// `MIMALLOC_ARENA_EAGER_COMMIT` says otherwise. mimalloc's Linux default (2: eager where the
/// OS overcommits) maps each arena with `MADV_HUGEPAGE`: under transparent huge pages its
/// memory is then resident in 2 MiB pages. On the replay benchmark (10,000 concurrent flows)
/// that is ~5 MiB more peak RSS (67 instead of 62 MiB, over the 64 MiB target) for ~9 % less
/// CPU time (fewer TLB misses on the flow table); the memory target wins by default, and
/// `MIMALLOC_ARENA_EAGER_COMMIT=2` takes the huge pages back (docs/engine.md, "Performance
/// notes").
///
/// Set from an `.init_array` entry: before `main` and before the first allocation of any Rust
/// code (the first allocation reserves the arena that the rest of the run uses), and after
/// mimalloc's own constructor, which runs first (priority 101) and has read the environment.
// Unsafe code of the binary: the allocator above, and here a constructor entry, getenv and
// one option write.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
extern "C" fn allocator_options() {
    // `mi_option_arena_eager_commit`, the fifth entry of `mi_option_e` in mimalloc.h (v2:
    // show_errors, show_stats, verbose, eager_commit, arena_eager_commit); the Rust binding
    // has no constant for it.
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: getenv of a static C string (no allocation; the environment is set up before
    // constructors run and nothing else runs yet); then one word of mimalloc's option table.
    unsafe {
        if nix::libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "rebuilder",
    version,
    about = "mirrorfleet data plane: VXLAN mirror traffic -> HTTP requests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extract the HTTP requests of a pcap/pcapng capture (VXLAN on UDP/4789, GENEVE on UDP/6081
    /// around it, or plain Ethernet).
    Replay(Box<ReplayArgs>),
    /// Write a deterministic synthetic capture (pcap) and its ground truth (jsonl).
    Generate(Box<GenerateArgs>),
    /// Receive mirror traffic (VXLAN, or GENEVE from a Gateway Load Balancer) on UDP, extract
    /// HTTP requests and forward them upstream.
    Run(Box<rebuilder::daemon::config::RunArgs>),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The daemon sets up its own logging (--log-format, --log-filter).
    let command = match cli.command {
        Command::Run(args) => {
            rebuilder::daemon::main(*args)?;
            return Ok(ExitCode::SUCCESS);
        }
        other => other,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match command {
        Command::Run(_) => unreachable!("handled above"),
        Command::Replay(args) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut err = std::io::stderr().lock();
            let outcome = match replay_command(&args, &mut out, &mut err) {
                Ok(o) => o,
                // `rebuilder replay x.pcap | head`: the reader went away, not an error of ours.
                Err(rebuilder::offline::replay::ReplayError::Output(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(e) = outcome.error {
                writeln!(err, "error: {e} (requests found before it were printed)")?;
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            let (frames, requests, expected) = generate_command(&args)?;
            eprintln!(
                "wrote {} frames to {}; {requests} requests ({expected} expected)",
                frames,
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::{Allocator, MI_MAX_ALIGN_SIZE};

    const SIZES: [usize; 16] = [
        1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 40, 100, 1000, 1025, 5000, 300_000,
    ];
    const ALIGNS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 4096];

    fn aligned(p: *mut u8, align: usize) -> bool {
        !p.is_null() && (p as usize).is_multiple_of(align)
    }

    #[test]
    #[allow(unsafe_code)]
    fn every_allocation_is_aligned_as_asked_whatever_its_size_and_path() {
        // Both paths: natural alignments go to mi_malloc and friends, the others (above 16,
        // or above the size) to the aligned entry points.
        assert_eq!(MI_MAX_ALIGN_SIZE, 16);
        for &align in &ALIGNS {
            for &size in &SIZES {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every pointer is freed once with its layout and
                // accessed only within its size.
                unsafe {
                    let p = Allocator.alloc(layout);
                    assert!(aligned(p, align), "alloc({size}, {align})");
                    p.write_bytes(0xA5, size);
                    for &new_size in &SIZES {
                        let q = Allocator.alloc(layout);
                        q.write_bytes(0x5A, size);
                        let r = Allocator.realloc(q, layout, new_size);
                        assert!(aligned(r, align), "realloc({size} -> {new_size}, {align})");
                        let kept = size.min(new_size);
                        assert!(
                            std::slice::from_raw_parts(r, kept)
                                .iter()
                                .all(|&b| b == 0x5A),
                            "realloc({size} -> {new_size}, {align}) kept the bytes"
                        );
                        Allocator.dealloc(r, Layout::from_size_align(new_size, align).unwrap());
                    }
                    Allocator.dealloc(p, layout);
                    let z = Allocator.alloc_zeroed(layout);
                    assert!(aligned(z, align), "alloc_zeroed({size}, {align})");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    Allocator.dealloc(z, layout);
                }
            }
        }
    }
}
