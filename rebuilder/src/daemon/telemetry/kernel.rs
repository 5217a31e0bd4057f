//! Kernel counters the daemon reports: datagrams dropped on our own sockets (the `drops`
//! column of /proc/net/udp and /proc/net/udp6, i.e. `sk_drops`, found by socket inode) and the
//! namespace-wide `Udp:` counters of /proc/net/snmp.

/// Kernel counters of a set of our sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketDrops {
    pub drops: u64,
    pub rx_queue_bytes: u64,
}

/// Sums the `drops` and `rx_queue` columns of /proc/net/udp and /proc/net/udp6 over the sockets
/// with these inodes. `None` when none of them is listed.
pub fn read_socket_drops(inodes: &[u64]) -> Option<SocketDrops> {
    let mut total = SocketDrops::default();
    let mut found = false;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            found |= add_socket_drops(&text, inodes, &mut total);
        }
    }
    found.then_some(total)
}

/// Adds the matching lines of one /proc/net/udp* table; true when one matched.
pub fn add_socket_drops(text: &str, inodes: &[u64], total: &mut SocketDrops) -> bool {
    let mut found = false;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        if !inodes.contains(&inode) {
            continue;
        }
        found = true;
        total.drops += f[12].parse::<u64>().unwrap_or(0);
        if let Some((_, rx)) = f[4].split_once(':') {
            total.rx_queue_bytes += u64::from_str_radix(rx, 16).unwrap_or(0);
        }
    }
    found
}

/// UDP counters of the network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSnmp {
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
}

/// Reads the `Udp:` lines of /proc/net/snmp.
pub fn read_udp_snmp() -> Option<UdpSnmp> {
    parse_udp_snmp(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// Parses the `Udp:` header and value lines of /proc/net/snmp.
pub fn parse_udp_snmp(text: &str) -> Option<UdpSnmp> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i).copied())
    };
    Some(UdpSnmp {
        in_errors: get("InErrors")?,
        rcvbuf_errors: get("RcvbufErrors")?,
    })
}
