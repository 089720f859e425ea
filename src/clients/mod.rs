//! The clients the binary ships, outside the server library (they use only its wire types):
//! [`cli`] (the client subcommands), [`client`] (how they present a token and TLS, and minting a
//! token for trying auth out) and [`bench`] (the load generator behind `grpc-chat bench`).

pub mod bench;
pub mod cli;
pub mod client;
