//! Usage accounting: what each request cost, read off the bytes nexus relays.
