//! `--coordinator none`: roles come from configuration, as before
//! automatic failover. Nothing is ever elected: campaigning and writing
//! the cluster record are refused, and there is no holder to watch.

use async_trait::async_trait;

use super::{
    Backend, Campaign, CampaignRule, ClusterRecord, Coordinator, Error, Holder, HolderWatch,
    Leadership, Member, MemberState, Result, Successor,
};

/// The manual backend.
#[derive(Debug, Default)]
pub struct Manual;

impl Manual {
    pub fn new() -> Manual {
        Manual
    }
}

#[async_trait]
impl Coordinator for Manual {
    fn backend(&self) -> Backend {
        Backend::None
    }

    async fn campaign(&self, _local_epoch: u32, _rule: CampaignRule) -> Result<Campaign> {
        Err(Error::Manual)
    }

    async fn renew(&self) -> Result<()> {
        Err(Error::NotLeader { epoch: None })
    }

    async fn resign(&self) -> Result<()> {
        Ok(())
    }

    async fn resign_to(&self, _successor: &str) -> Result<()> {
        Err(Error::NotLeader { epoch: None })
    }

    async fn successor(&self) -> Result<Option<Successor>> {
        Ok(None)
    }

    fn leadership(&self) -> Option<Leadership> {
        None
    }

    async fn holder(&self) -> Result<Option<Holder>> {
        Ok(None)
    }

    async fn watch_holder(&self) -> Result<HolderWatch> {
        Ok(HolderWatch::fixed(None))
    }

    async fn cluster(&self) -> Result<Option<ClusterRecord>> {
        Ok(None)
    }

    async fn cas_cluster(
        &self,
        _expected: Option<&ClusterRecord>,
        _in_sync: Vec<Member>,
    ) -> Result<ClusterRecord> {
        Err(Error::Manual)
    }

    /// Nothing to publish to: `cluster status` shows only the node asked.
    async fn publish(&self, _state: &MemberState) -> Result<()> {
        Ok(())
    }

    async fn members(&self) -> Result<Vec<MemberState>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_refuses_leadership_and_shows_nobody() {
        let c: Box<dyn Coordinator> = Box::new(Manual::new());
        assert_eq!(c.backend(), Backend::None);
        assert!(matches!(
            c.campaign(3, CampaignRule::Anyone).await,
            Err(Error::Manual)
        ));
        assert!(matches!(c.renew().await, Err(Error::NotLeader { .. })));
        assert!(matches!(
            c.cas_cluster(None, vec![Member::new("a", None)]).await,
            Err(Error::Manual)
        ));
        c.resign().await.unwrap();
        assert!(matches!(
            c.resign_to("b").await,
            Err(Error::NotLeader { .. })
        ));
        assert_eq!(c.successor().await.unwrap(), None);
        assert!(c.leadership().is_none());
        assert_eq!(c.holder().await.unwrap(), None);
        assert_eq!(c.cluster().await.unwrap(), None);
        assert!(c.members().await.unwrap().is_empty());
        let w = c.watch_holder().await.unwrap();
        assert_eq!(w.current(), None);
    }
}
