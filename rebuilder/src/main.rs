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
