-- Targeting: per campaign and seat, the stride scheduler's pass, the GCRA rate limit's
-- theoretical arrival time and the daily count; per campaign, how non-target seats are
-- served and which members come first. Kept in step with migrations/sqlite/0003_targeting.sql.

create table seat_schedule (
    campaign_id bigint not null references campaigns (id),
    seat_id     bigint not null references seats (id),
    -- lowest pass is served next; advances by STRIDE / weight per claim
    pass        bigint not null default 0,
    -- GCRA theoretical arrival time, unix ms
    tat         bigint not null default 0,
    -- attempts started on local day `day` (yyyymmdd), for the daily cap
    day         bigint not null default 0,
    day_count   bigint not null default 0,
    primary key (campaign_id, seat_id)
);

create table campaign_targeting (
    campaign_id       bigint primary key references campaigns (id),
    non_targets       text   not null default 'fallback'
                      check (non_targets in ('exclude', 'fallback', 'blend')),
    attribute         text,
    attribute_weights text   not null default '{}',
    updated_at        bigint not null
);

-- The claim picks a seat first, then walks this index within it.
drop index call_queue_ready_idx;
create index call_queue_seat_ready_idx
    on call_queue (campaign_id, seat_id, priority desc, not_before, id) where state = 'ready';
