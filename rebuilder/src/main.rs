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
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
// The only unsafe code of the binary: a constructor entry, getenv and one option write.
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
