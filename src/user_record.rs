//! What keydesk itself knows about one Vultr user, for the user page: the
//! recent history, open claim links, last notices, the hold, the latest
//! offboarding and lost creates. Read in one read transaction: one
//! connection, one consistent snapshot, no write.

use std::collections::HashMap;

use crate::audit::Entry;
use crate::db::Db;
use crate::grants::Grant;
use crate::holds::Hold;
use crate::notify::NoticeRow;
use crate::offboardings::Offboarding;
use crate::on_pool;

#[derive(Debug, Default)]
pub struct UserRecord {
    /// Newest first, the last ten.
    pub history: Vec<Entry>,
    /// Claim links not yet used, newest first.
    pub grants: Vec<Grant>,
    /// The last notice sent about each key, by key id.
    pub notices: HashMap<String, NoticeRow>,
    pub hold: Option<Hold>,
    pub offboarding: Option<Offboarding>,
    /// Lost creates still open or settled as made.
    pub lost: Vec<crate::lost_creates::LostRow>,
}

impl UserRecord {
    pub async fn read(db: &Db, user_id: &str) -> Result<Self, sqlx::Error> {
        on_pool!(read, db, |p| {
            let mut tx = p.begin().await?;
            let history = sqlx::query_as::<_, Entry>(crate::audit::USER_HISTORY_SQL)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
            let grants = sqlx::query_as::<_, Grant>(crate::grants::OPEN_FOR_USER_SQL)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
            let notices = sqlx::query_as::<_, NoticeRow>(crate::notify::LAST_SENT_SQL)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
            let hold = sqlx::query_as::<_, Hold>(crate::holds::HOLD_SQL)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
            let offboarding =
                sqlx::query_as::<_, Offboarding>(crate::offboardings::LATEST_FOR_USER_SQL)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let lost = sqlx::query_as(crate::lost_creates::VIEW_SQL)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
            // Nothing was written: ending it either way releases the snapshot.
            tx.rollback().await?;
            Ok(Self {
                history,
                grants,
                notices: crate::notify::newest_per_key(notices),
                hold,
                offboarding,
                lost,
            })
        })
    }
}
