//! Who may connect: the allowlist of Unix users and groups a server checks before it runs
//! anything a Unix peer sends (`serve --allow-uid`, `--allow-gid`).
//!
//! The kernel records the credentials of the process at the other end of a Unix stream
//! when it connects (`SO_PEERCRED`), and of the sender of each Unix datagram when the
//! server asks for them (`SO_PASSCRED`, `SCM_CREDENTIALS`); neither can be forged by the
//! peer. With an empty list every peer is taken (the socket file's mode, `--unix-mode`, is
//! then the only gate); with any entry, a peer is taken when its user id or its group id
//! is listed. The group is the peer's effective group only: supplementary groups are not
//! checked. A refused stream gets the close `NOT_ALLOWED` (nothing on it ran) and a
//! refused datagram is dropped; both are counted. TCP and UDP peers are not affected.

use crate::function::UnixCredentials;

/// The Unix users and groups a server takes calls from. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixAccess {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl UnixAccess {
    /// Takes calls from every Unix peer.
    #[must_use]
    pub fn everyone() -> Self {
        Self::default()
    }

    /// Also takes calls from processes running as user `uid`.
    #[must_use]
    pub fn allow_uid(mut self, uid: u32) -> Self {
        if !self.uids.contains(&uid) {
            self.uids.push(uid);
        }
        self
    }

    /// Also takes calls from processes whose effective group is `gid`.
    #[must_use]
    pub fn allow_gid(mut self, gid: u32) -> Self {
        if !self.gids.contains(&gid) {
            self.gids.push(gid);
        }
        self
    }

    /// `true` when no list is set: every Unix peer is taken.
    #[must_use]
    pub fn is_everyone(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// Whether a peer with these credentials is taken. A peer without credentials is taken
    /// only when there is no list.
    #[must_use]
    pub fn allows(&self, credentials: Option<UnixCredentials>) -> bool {
        if self.is_everyone() {
            return true;
        }
        credentials.is_some_and(|c| self.uids.contains(&c.uid) || self.gids.contains(&c.gid))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_lists() {
        let me = Some(UnixCredentials::new(1000, 100, 42));
        assert!(UnixAccess::everyone().allows(me));
        assert!(UnixAccess::everyone().allows(None));
        let by_uid = UnixAccess::everyone().allow_uid(1000);
        assert!(by_uid.allows(me));
        assert!(!by_uid.allows(Some(UnixCredentials::new(0, 0, 1))));
        assert!(!by_uid.allows(None));
        let by_gid = UnixAccess::everyone().allow_gid(100);
        assert!(by_gid.allows(me));
        assert!(!by_gid.allows(Some(UnixCredentials::new(1000, 5, 1))));
        assert_eq!(by_uid.clone().allow_uid(1000), by_uid);
    }
}
