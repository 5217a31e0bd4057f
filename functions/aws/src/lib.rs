//! mirrorfleet control-plane adapters: EC2 and Auto Scaling behind small traits.
