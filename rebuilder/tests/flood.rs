//! Floods through the engine (small enough for `make test`; full size: `cargo bench -p
//! rebuilder --bench flood`): the flow cap and the memory budget hold at every step, evictions
//! and drops are counted, attacker bytes never become a request, and the legitimate
//! connections mixed into the flood are recovered exactly.

use rebuilder::{DropReason, EngineConfig};
use rebuilder_testkit::flood::{Flood, Plan, ceiling_kib, peak_rss_in_child, run, run_as_child};
use rebuilder_testkit::frames::TcpConn;

fn plan(flood: Flood, flood_packets: usize) -> Plan {
    Plan {
        flood,
        flood_packets,
        legit_connections: 300,
        legit_concurrency: 50,
        legit_response_bodies: true,
        config: EngineConfig {
            max_flows: 4_000,
            memory_budget_bytes: 2 * 1024 * 1024,
            ..EngineConfig::default()
        },
        seed: 8,
    }
}

#[test]
fn a_flood_of_concurrent_connections_is_evicted_counted_and_legitimate_flows_survive() {
    let o = run(&plan(Flood::Flows, 2 * 12_000), |_| {});
    eprintln!("{o:?}");
    assert_eq!(
        o.max_active_flows, 4_000,
        "the table filled up to its cap, no further"
    );
    assert!(o.stats.flows_evicted >= 8_000, "{}", o.stats.flows_evicted);
    // Attacker heads held in evicted directions are counted as lost requests.
    assert!(o.stats.drops(DropReason::FlowEvicted) > 0);
    assert_eq!(o.foreign, 0);
    assert_eq!(
        o.legit_corrupted, 0,
        "no legitimate request is altered or duplicated"
    );
    assert!(
        o.recovered_fraction() >= 0.99,
        "recovered {:.4}",
        o.recovered_fraction()
    );
}

#[test]
fn a_syn_flood_keeps_the_table_at_its_cap_and_legitimate_flows_survive() {
    let o = run(&plan(Flood::Syn, 20_000), |_| {});
    eprintln!("{o:?}");
    assert_eq!(o.max_active_flows, 4_000);
    assert!(o.stats.flows_evicted >= 16_000 - 4_000);
    assert_eq!(o.foreign, 0);
    assert_eq!(o.legit_corrupted, 0);
    assert!(
        o.recovered_fraction() >= 0.99,
        "recovered {:.4}",
        o.recovered_fraction()
    );
}

#[test]
fn random_garbage_is_dropped_by_reason_and_legitimate_flows_are_all_recovered() {
    let o = run(&plan(Flood::Garbage, 30_000), |_| {});
    eprintln!("{o:?} {}", o.drops_line());
    for r in [DropReason::VxlanMalformed, DropReason::MalformedPacket] {
        assert!(o.stats.drops(r) > 0, "{}", r.as_str());
    }
    assert_eq!(o.stats.packets, o.legit_packets + o.flood_packets);
    assert_eq!(o.foreign, 0);
    assert_eq!(o.legit_corrupted, 0);
    assert_eq!(
        o.legit_recovered, o.legit_expected,
        "every legitimate request"
    );
}

#[test]
fn maximum_size_datagrams_out_of_order_stay_within_the_budget_and_are_counted() {
    let o = run(&plan(Flood::Jumbo, 3_000), |_| {});
    eprintln!("{o:?} {}", o.drops_line());
    assert!(o.max_buffered_bytes <= 2 * 1024 * 1024);
    assert!(
        o.max_buffered_bytes > 1024 * 1024,
        "the flood did fill the budget"
    );
    assert!(o.stats.drops(DropReason::OverBudget) > 0);
    assert_eq!(o.foreign, 0);
    assert_eq!(o.legit_corrupted, 0);
    // The budget is shared: while the attacker holds it, legitimate out-of-order segments
    // are dropped (`over_budget`, then holes) and bodies are cut (flagged, a prefix of the
    // truth). Measured: 946 of 1,350 intact, 261 flagged truncated, 143 lost (9 counted as
    // `message_gap`, the others wholly inside skipped holes: `gaps`), 0 altered.
    assert!(o.legit_truncated > 0);
    assert!(
        o.recovered_fraction() >= 0.6,
        "recovered {:.4}",
        o.recovered_fraction()
    );
}

/// Many connections each hold an unfinished chunk-size line or trailer section (never
/// terminated): the bytes held are charged to the global budget and refused beyond it
/// (counted as `over_budget`), whatever the number of connections.
#[test]
fn unfinished_chunk_lines_and_trailers_on_many_flows_stay_within_the_budget() {
    let budget = 256 * 1024;
    let mut engine = rebuilder::Engine::new(EngineConfig {
        memory_budget_bytes: budget,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    let mut now = 1_700_000_000_000_000u64;
    let chunk_head = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let trailer_head = b"POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: ";
    let filler = vec![b'0'; 1000];
    let text = vec![b'v'; 1000];
    for port in 1000..3000u16 {
        let client = ([10, 9, (port >> 8) as u8, port as u8], port).into();
        let mut c = TcpConn::between(1, client, ([10, 0, 0, 2], 80).into(), 0);
        let (head, fill): (&[u8], &[u8]) = if port % 2 == 0 {
            (chunk_head, &filler)
        } else {
            (trailer_head, &text)
        };
        for d in [c.syn(), c.send(head), c.send(&fill[..900])] {
            now += 1;
            engine.on_vxlan_payload(now, &d, &mut out);
        }
        assert!(
            engine.buffered_bytes() <= budget,
            "buffered {} > budget {budget} after {} flows",
            engine.buffered_bytes(),
            port - 999
        );
    }
    assert!(engine.stats().drops(DropReason::OverBudget) > 0);
    engine.finish(&mut out);
    assert!(out.is_empty());
    assert_eq!(engine.buffered_bytes(), 0);
}

/// The floods of the parser's pending state: (flood, attacker connections, the least each
/// connection would hold if nothing were charged, bytes). (Announced bodies were a third: a
/// 60,000-byte body's first allocation was reserved at its head; nothing is now held for
/// bytes that have not come, see
/// `announced_bodies_that_never_come_hold_nothing_for_them_and_legitimate_requests_are_all_recovered`.)
const PENDING: [(Flood, usize, u64); 2] = [
    // 8 KB of an unfinished head in a parser buffer.
    (Flood::Heads, 6_000, 8_000),
    // 997 fields held by a pending request: at least their names, values and list slots.
    (Flood::Fields, 1_500, 997 * 48),
];

#[test]
fn announced_bodies_that_never_come_hold_nothing_for_them_and_legitimate_requests_are_all_recovered()
 {
    // 6,000 heads announcing 60,000-byte bodies: 360 MB announced to an 8 MiB budget.
    let o = run(&pending_plan(Flood::Bodies, 6_000), |_| {});
    eprintln!("{o:?}");
    assert_eq!(o.stats.drops(DropReason::OverBudget), 0);
    assert_eq!(o.stats.drops(DropReason::MessageIncomplete), 6_000);
    assert_eq!((o.foreign, o.legit_corrupted), (0, 0));
    assert_eq!(o.legit_recovered, o.legit_expected);
}

#[test]
fn idle_attackers_holding_unfinished_heads_are_reclaimed_and_legitimate_requests_recovered() {
    let heads = |reclaim_idle_us: u64| {
        // 6,000 unfinished 8 KB heads: 48 MB to an 8 MiB budget.
        let mut p = pending_plan(Flood::Heads, 6_000);
        p.config.reclaim_idle_us = reclaim_idle_us;
        let o = run(&p, |_| {});
        eprintln!("reclaim_idle_us {reclaim_idle_us}: {o:?}");
        assert_eq!((o.foreign, o.legit_corrupted), (0, 0));
        o
    };
    // This plan's traffic spans 98 ms of capture clock and fills the budget at 14 ms: the
    // idle floor is scaled with it (the full-size bench spans 1.4 s, fills it at 0.13 s and
    // runs with the default).
    let on = heads(2_000);
    let off = heads(u64::MAX);
    assert!(on.stats.flows_reclaimed > 0);
    assert_eq!(off.stats.flows_reclaimed, 0);
    // The heads of reclaimed directions are counted lost with them.
    assert!(on.stats.drops(DropReason::FlowEvicted) > 0);
    assert!(
        on.recovered_fraction() >= 0.95 && off.recovered_fraction() < 0.75,
        "recovered {:.4} with reclaiming, {:.4} without",
        on.recovered_fraction(),
        off.recovered_fraction()
    );
}

fn pending_plan(flood: Flood, connections: usize) -> Plan {
    Plan::peak_rss(flood, 2 * connections)
}

/// Issue 14 item 7: unfinished heads and pending requests with 1,000 fields on thousands of
/// connections. Each flood runs in a child process whose peak RSS must stay
/// under the configured cap (its baseline + the memory budget + the flow table at its cap),
/// although each would hold several times that if the parser's state were not charged to the
/// budget; the legitimate requests mixed in are never altered.
#[test]
fn pending_requests_of_a_flood_keep_the_peak_rss_under_the_configured_cap() {
    const NAME: &str = "pending_requests_of_a_flood_keep_the_peak_rss_under_the_configured_cap";
    for (flood, connections, _) in PENDING {
        if run_as_child(&pending_plan(flood, connections)) {
            return;
        }
    }
    for (flood, connections, each) in PENDING {
        let plan = pending_plan(flood, connections);
        let r = peak_rss_in_child(NAME, flood);
        let ceiling = ceiling_kib(r.baseline_kib, &plan);
        let caps_kib = ceiling - r.baseline_kib;
        eprintln!(
            "{}: peak {} KiB (baseline {} KiB, ceiling {ceiling} KiB): {}",
            flood.as_str(),
            r.peak_kib,
            r.baseline_kib,
            r.summary
        );
        assert!(
            connections as u64 * each / 1024 > 2 * caps_kib,
            "{}: the flood would not exceed the caps uncharged",
            flood.as_str()
        );
        assert!(
            r.peak_kib <= ceiling,
            "{}: peak RSS {} KiB over the ceiling {ceiling} KiB",
            flood.as_str(),
            r.peak_kib
        );
    }
}
