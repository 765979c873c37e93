-- Report indexes (issue 5): the campaign report reads attempts and answers by time
-- window, the queue by state per seat, and live sessions per campaign, without scanning
-- other campaigns' rows. Kept in step with the other backend's 0005_limits.sql.

-- Attempts by campaign and time: the last hour, the last 15 minutes, weekly buckets.
create index contact_attempts_campaign_created_idx
    on contact_attempts (campaign_id, created_at);
-- Answers by campaign and time: weekly buckets.
create index answers_campaign_created_idx on answers (campaign_id, created_at);
-- Completed and remaining members per seat: counted from the index alone.
create index call_queue_campaign_state_idx on call_queue (campaign_id, state, seat_id);
-- Volunteers live on a campaign now.
create index volunteer_sessions_campaign_state_idx
    on volunteer_sessions (campaign_id, state, created_at);
