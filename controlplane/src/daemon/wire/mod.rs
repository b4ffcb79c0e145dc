//! Frames on the wire and the sockets that carry them: announcements and
//! probes ([`announce`], [`frames`]), and what TCP peers are told after a move ([`revive`]:
//! the backoff revert; [`tickle`]: a takeover's tickle ACKs, from the
//! [`connections`] a member publishes) through [`raw`] IP sockets.
pub mod announce;
pub mod connections;
pub mod frames;
pub mod raw;
pub mod revive;
pub mod tickle;

use baton_config::InstanceName;
use std::net::IpAddr;
use tokio::sync::mpsc;

/// A takeover's tickles: what they did, or (instance, error).
pub type TickleResult = Result<tickle::Tickled, (InstanceName, String)>;

/// What TCP peers are told after a move, off the main loop; the results
/// come back to the loop on the receivers [`Aftercare::new`] returns.
pub struct Aftercare {
    /// Ends the sockets' retransmission backoff after a move (None when no
    /// instance asks for it, or the socket iterator could not load).
    reviver: Option<revive::Reviver>,
    revived: mpsc::UnboundedSender<revive::Revival>,
    tickled: mpsc::UnboundedSender<TickleResult>,
}

/// Where the loop hears what [`Aftercare`] did.
pub struct AftercareResults {
    pub revived: mpsc::UnboundedReceiver<revive::Revival>,
    pub tickled: mpsc::UnboundedReceiver<TickleResult>,
}

impl Aftercare {
    pub fn new(reviver: Option<revive::Reviver>) -> (Aftercare, AftercareResults) {
        let (revived, revived_rx) = mpsc::unbounded_channel();
        let (tickled, tickled_rx) = mpsc::unbounded_channel();
        (
            Aftercare {
                reviver,
                revived,
                tickled,
            },
            AftercareResults {
                revived: revived_rx,
                tickled: tickled_rx,
            },
        )
    }

    /// The backoff revert of the sockets on `addr` (`outage`: a failover).
    pub fn revive(&self, instance: &InstanceName, addr: IpAddr, outage: bool) {
        if let Some(r) = &self.reviver {
            r.spawn(instance.clone(), addr, outage, self.revived.clone());
        }
    }

    /// The tickle ACKs to the old owner's client connections.
    pub fn tickle(
        &self,
        instance: &InstanceName,
        addr: IpAddr,
        conns: Vec<crate::cluster::records::Conn>,
    ) {
        tickle::spawn(instance.clone(), addr, conns, self.tickled.clone());
    }
}
