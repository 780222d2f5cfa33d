//! [`JobCounts`]: one job's result entries counted by platform, status and
//! code on the stack, so that metrics and campaign stats take their label
//! lookups and locks once per job instead of once per notification.

use crate::job::Platform;
use crate::outcome::{Class, Code, Status};
use crate::report::ResultEntry;

/// Code slots: 0 is "no code" (delivered), then `Code::ALL` in order.
const CODES: usize = Code::ALL.len() + 1;
const STATUSES: [Status; 3] = [Status::Delivered, Status::Failed, Status::Retrying];

/// Entries by platform, status and code, plus invalid tokens by platform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    cells: [[[u32; CODES]; 3]; 3],
    tokens: [u32; 3],
}

fn status_index(s: Status) -> usize {
    match s {
        Status::Delivered => 0,
        Status::Failed => 1,
        Status::Retrying => 2,
    }
}

fn code_slot(code: Option<Code>) -> usize {
    code.map_or(0, |c| c as usize + 1)
}

impl JobCounts {
    /// Counts `entries` (all of one job, any status).
    pub fn from_entries(entries: &[ResultEntry]) -> JobCounts {
        let mut c = JobCounts::default();
        for e in entries {
            c.add_entry(e);
        }
        c
    }

    pub fn add_entry(&mut self, e: &ResultEntry) {
        let token_feedback = e.status == Status::Failed
            && e.code.is_some_and(|c| c.class() == Class::Token)
            && e.token.is_some();
        self.add(e.platform, e.status, e.code, token_feedback);
    }

    /// One entry; `invalid_token`: its token went out as token feedback.
    pub fn add(&mut self, p: Platform, s: Status, code: Option<Code>, invalid_token: bool) {
        let cell = &mut self.cells[p as usize][status_index(s)][code_slot(code)];
        *cell = cell.saturating_add(1);
        if invalid_token {
            self.tokens[p as usize] = self.tokens[p as usize].saturating_add(1);
        }
    }

    /// Non-zero cells: (platform, status, code, count).
    pub fn cells(&self) -> impl Iterator<Item = (Platform, Status, Option<Code>, u32)> + '_ {
        Platform::ALL.into_iter().flat_map(move |p| {
            STATUSES.into_iter().flat_map(move |s| {
                let row = &self.cells[p as usize][status_index(s)];
                (0..CODES).filter_map(move |slot| {
                    let code = slot.checked_sub(1).and_then(|i| Code::ALL.get(i).copied());
                    (row[slot] > 0).then_some((p, s, code, row[slot]))
                })
            })
        })
    }

    /// Non-zero invalid-token counts by platform.
    pub fn invalid_tokens(&self) -> impl Iterator<Item = (Platform, u32)> + '_ {
        Platform::ALL
            .into_iter()
            .map(|p| (p, self.tokens[p as usize]))
            .filter(|(_, n)| *n > 0)
    }

    /// Entries with `status`, all platforms and codes.
    pub fn with_status(&self, s: Status) -> u64 {
        self.cells
            .iter()
            .flat_map(|by_status| by_status[status_index(s)].iter())
            .map(|&n| u64::from(n))
            .sum()
    }

    /// Failed (final) entries by code, all platforms.
    pub fn failed_by_code(&self) -> impl Iterator<Item = (Code, u64)> + '_ {
        Code::ALL.into_iter().filter_map(|code| {
            let n: u64 = self
                .cells
                .iter()
                .map(|by_status| u64::from(by_status[1][code_slot(Some(code))]))
                .sum();
            (n > 0).then_some((code, n))
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == JobCounts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_discriminants_follow_all() {
        for (i, c) in Code::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i, "{c:?}");
        }
    }

    #[test]
    fn cells_round_trip_labels() {
        let mut c = JobCounts::default();
        assert!(c.is_empty());
        c.add(
            Platform::Webpush,
            Status::Failed,
            Some(Code::CampaignStopped),
            false,
        );
        c.add(
            Platform::Webpush,
            Status::Failed,
            Some(Code::CampaignStopped),
            false,
        );
        c.add(Platform::Apns, Status::Delivered, None, false);
        c.add(
            Platform::Fcm,
            Status::Failed,
            Some(Code::BadDeviceToken),
            true,
        );
        let cells: Vec<_> = c.cells().collect();
        assert_eq!(
            cells,
            vec![
                (Platform::Apns, Status::Delivered, None, 1),
                (Platform::Fcm, Status::Failed, Some(Code::BadDeviceToken), 1),
                (
                    Platform::Webpush,
                    Status::Failed,
                    Some(Code::CampaignStopped),
                    2
                ),
            ]
        );
        assert_eq!(c.with_status(Status::Failed), 3);
        assert_eq!(c.with_status(Status::Retrying), 0);
        let failed: Vec<_> = c.failed_by_code().collect();
        assert_eq!(
            failed,
            vec![(Code::BadDeviceToken, 1), (Code::CampaignStopped, 2)]
        );
        assert_eq!(
            c.invalid_tokens().collect::<Vec<_>>(),
            vec![(Platform::Fcm, 1)]
        );
    }
}
