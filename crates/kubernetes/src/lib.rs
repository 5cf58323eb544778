//! What podipd reads from and writes to the Kubernetes API: its own Node, ENIConfigs, events.
