//! A user's API allowlist: `GET`, `POST` and `DELETE
//! /v2/users/{id}/ip-whitelist`. The list is cached like the user (and
//! dropped with it after any write); a write is sent once, never retried.

use reqwest::Method;
use serde::Deserialize;

use super::{VultrClient, VultrError};
use crate::allowlist::Entry;
use crate::ids::VultrId;

#[derive(Clone, Deserialize)]
struct AllowlistEnvelope {
    #[serde(default)]
    ip_whitelist: Vec<Entry>,
}

impl VultrClient {
    /// The user's allowlist as Vultr reports it.
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn allowlist(&self, user_id: &VultrId) -> Result<Vec<Entry>, VultrError> {
        let path = format!("/v2/users/{user_id}/ip-whitelist");
        let env: AllowlistEnvelope = self
            .get_json("GET /v2/users/{id}/ip-whitelist", &path, &[], true)
            .await?;
        Ok(env.ip_whitelist)
    }

    /// The allowlist as Vultr reports it now: one GET, neither read from
    /// the cache nor dropping anything from it.
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn allowlist_now(&self, user_id: &VultrId) -> Result<Vec<Entry>, VultrError> {
        let path = format!("/v2/users/{user_id}/ip-whitelist");
        let env: AllowlistEnvelope = self
            .get_json("GET /v2/users/{id}/ip-whitelist", &path, &[], false)
            .await?;
        Ok(env.ip_whitelist)
    }

    /// Adds `subnet/size` (Vultr treats a repeat as done).
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn allowlist_add(
        &self,
        user_id: &VultrId,
        net: &ipnet::IpNet,
    ) -> Result<(), VultrError> {
        self.allowlist_write(
            Method::POST,
            "POST /v2/users/{id}/ip-whitelist",
            user_id,
            net,
        )
        .await
    }

    /// Removes `subnet/size`: a DELETE that carries the entry as its JSON body.
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn allowlist_remove(
        &self,
        user_id: &VultrId,
        net: &ipnet::IpNet,
    ) -> Result<(), VultrError> {
        let endpoint = "DELETE /v2/users/{id}/ip-whitelist";
        self.allowlist_write(Method::DELETE, endpoint, user_id, net)
            .await
    }

    async fn allowlist_write(
        &self,
        method: Method,
        endpoint: &'static str,
        user_id: &VultrId,
        net: &ipnet::IpNet,
    ) -> Result<(), VultrError> {
        let path = format!("/v2/users/{user_id}/ip-whitelist");
        let body = serde_json::json!({
            "subnet": net.network().to_string(),
            "subnet_size": net.prefix_len(),
        });
        let req = self.request(method, &path).json(&body);
        let res = self.send_once(endpoint, req, true).await;
        self.invalidate_user(user_id);
        res.map(|_| ())
    }
}
