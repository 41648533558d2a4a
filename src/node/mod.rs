//! The processes: `kaon init`/`kaon cn` ([`cn`]), `kaon rn` ([`ranger`]), the development
//! network ([`devnet`]) with its load generator and development accounts, `kaon chaos`
//! ([`chaos`]) over separate processes ([`cluster`]) behind a fault-injecting UDP proxy
//! ([`netem`]) and with a fillable datadir ([`tmpfs`]), the PoR miner
//! client, `kaon withdraw`, the RPC backend over a ranger node ([`rpc`]) and the forwarding of
//! accepted transactions to the CNs ([`outbox`]), and the relay of regions' headers into each
//! other's regionchains ([`relay`]). Everything here wires lower modules together;
//! the chain's rules live in [`crate::chain`].

pub mod accounts;
pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod cn;
pub mod devnet;
pub mod keyfile;
pub mod loadgen;
pub mod miner;
pub mod netem;
pub mod outbox;
pub mod process;
pub mod ranger;
pub mod region_create;
pub mod region_move;
pub mod regions;
pub mod relay;
pub mod rewards;
pub mod rpc;
pub mod tmpfs;
