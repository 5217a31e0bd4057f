//! mirrorfleet rebuilder: VXLAN mirror traffic -> TCP reassembly -> HTTP requests.
