// Empty on purpose: the programs live in the `baton-dataplane` binary. The
// library target exists so the controlplane can build-depend on this crate,
// which makes cargo rebuild the BPF object when this crate changes.
#![no_std]
