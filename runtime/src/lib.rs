//! The Flow runtime. Issue #3 builds the VM, the store and `flowrt` here.
