//! The kernel's network state through rtnetlink: the [`monitor`] of links,
//! addresses and routes (decoded by [`decode`]), a full dump of it
//! ([`observed`]), and a move's writes ([`requests`]) in one datagram
//! ([`batch`]).
pub mod batch;
pub mod decode;
pub mod monitor;
pub mod observed;
pub mod requests;
