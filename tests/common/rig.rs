//! A mock upstream and a nexus pointed at it, started together.

use super::mock::{MockReply, MockUpstream, Recorded};
use super::nexus::{Nexus, NexusBuilder};
use super::tls::TlsSetup;

/// Which transport the mock upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// `http://127.0.0.1:PORT`.
    Plain,
    /// `https://localhost:PORT` with a generated certificate nexus trusts via UPSTREAM_CA_FILE.
    Tls,
}

/// nexus in front of a mock upstream. Drops nexus first, then the mock.
pub struct Rig {
    pub nexus: Nexus,
    pub mock: MockUpstream,
    _tls: Option<TlsSetup>,
}

impl Rig {
    /// A plain mock with `handler` and a default nexus.
    pub fn plain(handler: impl Fn(&Recorded) -> MockReply + Send + Sync + 'static) -> Rig {
        Rig::start(Upstream::Plain, handler, |nexus| nexus)
    }

    /// A mock of the given kind with `handler`; `configure` adjusts nexus before it starts.
    pub fn start(
        upstream: Upstream,
        handler: impl Fn(&Recorded) -> MockReply + Send + Sync + 'static,
        configure: impl FnOnce(NexusBuilder) -> NexusBuilder,
    ) -> Rig {
        let tls = (upstream == Upstream::Tls).then(TlsSetup::trusted);
        let mut mock = MockUpstream::builder();
        if let Some(tls) = &tls {
            mock = mock.tls(tls.server_config());
        }
        let mock = mock.start(handler);
        let mut nexus = Nexus::builder().upstream(&mock.url());
        if let Some(tls) = &tls {
            nexus = nexus.ca_file(tls.ca_file());
        }
        let nexus = configure(nexus).start();
        mock.set_fronted_by(nexus.addr());
        Rig {
            nexus,
            mock,
            _tls: tls,
        }
    }

    /// nexus in front of an already started plain `mock`.
    pub fn around(mock: MockUpstream, configure: impl FnOnce(NexusBuilder) -> NexusBuilder) -> Rig {
        assert!(
            !mock.is_tls(),
            "Rig::around takes a plain mock; use Rig::start for TLS"
        );
        let nexus = configure(Nexus::builder().upstream(&mock.url())).start();
        mock.set_fronted_by(nexus.addr());
        Rig {
            nexus,
            mock,
            _tls: None,
        }
    }
}
