//! `mirror-lab`: the data-plane test kit for shell scripts (`make demo`): the network
//! namespace mirror lab, the recording analyzer, the VXLAN datagram counter, the sent vs.
//! received comparison, and a capture sender for the loopback path.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rebuilder::offline::capture::CaptureReader;
use rebuilder_testkit::analyzer::{Analyzer, AnalyzerConfig};
use rebuilder_testkit::compare::compare_files;
use rebuilder_testkit::netns::{self, LabSpec, MirrorLab};
use rebuilder_testkit::traffic::vxlan_payload;
use rebuilder_testkit::udp_sink::UdpSink;

#[derive(Debug, Parser)]
#[command(
    name = "mirror-lab",
    about = "mirrorfleet data-plane test kit for scripts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mirror {
    /// Both directions (a session with an accept-all filter).
    Both,
    /// Client → server only.
    Ingress,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 if this machine can build the lab; otherwise print why not and exit 1.
    Check,
    /// Build the lab PREFIX-{cli,srv,col} with the mirror's VNI (a lab of that prefix is
    /// removed first). It stays until `down`.
    Up {
        prefix: String,
        vni: u32,
        #[arg(value_enum, default_value = "both")]
        mirror: Mirror,
    },
    /// Remove the lab PREFIX (and kill what still runs in it).
    Down { prefix: String },
    /// Remove the labs BASE<pid>... whose process is gone.
    Reap { base: String },
    /// Print the lab's addresses as shell assignments.
    Addrs,
    /// Serve HTTP, recording every request (JSON lines); until SIGTERM or SIGINT.
    Analyzer {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Listen inside this network namespace.
        #[arg(long)]
        netns: Option<String>,
        /// Append one JSON object per request to this file.
        #[arg(long)]
        record: Option<PathBuf>,
        #[arg(long, default_value = "analyzer")]
        label: String,
        /// Do not print a line per request.
        #[arg(long)]
        quiet: bool,
    },
    /// Count VXLAN datagrams per VNI, rewriting the counts (JSON) to FILE every 200 ms;
    /// until SIGTERM or SIGINT.
    UdpSink {
        #[arg(long, default_value = "0.0.0.0:4789")]
        listen: SocketAddr,
        #[arg(long)]
        netns: Option<String>,
        #[arg(long)]
        record: PathBuf,
    },
    /// Match the analyzer's records against what was sent; exit 1 on any difference.
    Compare {
        /// The web server's records, or a `rebuilder generate --truth` file.
        #[arg(long)]
        sent: PathBuf,
        /// The analyzer's records.
        #[arg(long)]
        received: PathBuf,
        /// The client address the web server must have seen.
        #[arg(long)]
        client_ip: Option<String>,
        /// How many requests the client sent.
        #[arg(long)]
        expect_count: Option<usize>,
        /// Write the verdict (sent, received, problems) here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Only the summary, not the table.
        #[arg(long)]
        quiet: bool,
    },
    /// Send the VXLAN payloads of a capture as UDP datagrams (bounded in time).
    SendPcap {
        capture: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        /// Datagrams per second (0: as fast as possible).
        #[arg(long, default_value_t = 20_000)]
        pps: u64,
        #[arg(long, default_value_t = 60)]
        max_seconds: u64,
    },
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_termination() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Check => {
            if let Err(why) = netns::check() {
                println!("{why}");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Up {
            prefix,
            vni,
            mirror,
        } => {
            let mut spec = LabSpec::new(&prefix, vni);
            if mirror == Mirror::Ingress {
                spec = spec.ingress_only();
            }
            MirrorLab::up(&spec)?.keep();
        }
        Command::Down { prefix } => netns::down(&prefix),
        Command::Reap { base } => {
            for prefix in netns::reap(&base) {
                eprintln!("mirror-lab: removed {prefix} (left by a process that is gone)");
            }
        }
        Command::Addrs => {
            let a = netns::ADDRS;
            println!(
                "CLIENT_IP={} SERVER_IP={} MIRROR_SRC_IP={} COLLECTOR_IP={}",
                a.client, a.server, a.mirror_src, a.collector
            );
        }
        Command::Analyzer {
            listen,
            netns,
            record,
            label,
            quiet,
        } => {
            let analyzer = Analyzer::start(AnalyzerConfig {
                listen,
                netns,
                record,
                label: label.clone(),
                print: !quiet,
            })
            .with_context(|| format!("listening on {listen}"))?;
            println!("[{label}] listening on {}", analyzer.addr);
            wait_for_termination()?;
            println!("[{label}] stopped after {} requests", analyzer.received());
        }
        Command::UdpSink {
            listen,
            netns,
            record,
        } => {
            let sink = UdpSink::start(netns.as_deref(), listen)
                .with_context(|| format!("listening on {listen}"))?;
            println!("[udp-sink] listening on {}", sink.addr);
            let dump = |sink: &UdpSink| -> anyhow::Result<()> {
                let tmp = record.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&sink.counts())?)?;
                std::fs::rename(&tmp, &record)?;
                Ok(())
            };
            dump(&sink)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s = stop.clone();
            std::thread::spawn(move || {
                let _ = wait_for_termination();
                s.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                dump(&sink)?;
            }
            dump(&sink)?;
        }
        Command::Compare {
            sent,
            received,
            client_ip,
            expect_count,
            json,
            quiet,
        } => {
            let verdict = compare_files(&sent, &received, client_ip.as_deref(), expect_count)?;
            print!("{}", verdict.report(!quiet));
            if let Some(path) = json {
                let v = serde_json::json!({
                    "sent": verdict.sent,
                    "received": verdict.received,
                    "problems": verdict.problems,
                });
                std::fs::write(path, v.to_string())?;
            }
            if !verdict.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::SendPcap {
            capture,
            to,
            pps,
            max_seconds,
        } => {
            let file = std::fs::File::open(&capture)
                .with_context(|| format!("opening {}", capture.display()))?;
            let mut reader = CaptureReader::new(std::io::BufReader::new(file))
                .with_context(|| format!("reading {}", capture.display()))?;
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let socket = UdpSocket::bind(any)?;
            let start = Instant::now();
            let limit = Duration::from_secs(max_seconds);
            let mut sent = 0u64;
            while let Some(packet) = reader.next_packet()? {
                let Some((_, payload)) = vxlan_payload(packet.frame) else {
                    continue;
                };
                if let Some(due) = (sent * 1_000_000_000).checked_div(pps) {
                    let due = Duration::from_nanos(due);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                if start.elapsed() > limit {
                    eprintln!("send-pcap: stopped after {max_seconds} s");
                    break;
                }
                socket.send_to(payload, to)?;
                sent += 1;
            }
            println!("sent {sent} datagrams to {to}");
        }
    }
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
