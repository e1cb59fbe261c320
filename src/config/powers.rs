//! `KEYDESK_SENSITIVE_ACLS`: which ACLs make a key sensitive.

use clap::Args;

use crate::powers::Powers;

#[derive(Args, Clone, Debug)]
pub struct PowersArgs {
    /// ACLs whose keys count as sensitive (comma list of Vultr ACL names). manage_users is always root-equivalent.
    #[arg(
        long,
        env = "KEYDESK_SENSITIVE_ACLS",
        value_delimiter = ',',
        default_value = "billing,provisioning,subscriptions,upgrade"
    )]
    pub sensitive_acls: Vec<String>,
}

impl PowersArgs {
    /// The levels' policy, or an error naming the variable.
    pub fn powers(&self) -> Result<Powers, String> {
        Powers::with_sensitive(&self.sensitive_acls)
    }
}
