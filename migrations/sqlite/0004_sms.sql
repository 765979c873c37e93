-- SMS: survey texts (the outbox the sender works through), numbers the provider says
-- cannot take a text, and every inbound reply with its organiser review state. Kept in
-- step with migrations/postgres/0004_sms.sql.

-- One row per text to send: the unique key is the "never twice to one member for one
-- question" rule. queued -> sending (leased by one worker) -> sent | failed | uncertain;
-- skipped when it was never attempted (suppressed, bad number, shared number ...).
create table sms_outbox (
    id              integer primary key,
    campaign_id     bigint not null references campaigns (id),
    member_id       bigint not null references members (id),
    question_code   text   not null,
    -- copied from the member and seat at queueing time, like call_queue
    phone           text   not null,
    time_zone       text   not null,
    -- the text exactly as it is sent, and what it costs
    body            text   not null,
    segments        bigint not null,
    state           text   not null default 'queued'
                    check (state in ('queued', 'sending', 'sent', 'skipped', 'failed', 'uncertain')),
    -- why skipped / failed / uncertain (machine code), and the provider's own words
    reason          text,
    error_code      bigint,
    error_message   text,
    attempts        bigint not null default 0,
    not_before      bigint not null default 0,
    lease_until     bigint,
    message_sid     text   unique,
    -- the latest delivery status from status callbacks, ranked so it never regresses
    delivery_status text,
    delivery_rank   bigint not null default 0,
    sent_at         bigint,
    answered_at     bigint,
    created_at      bigint not null,
    updated_at      bigint not null,
    unique (campaign_id, member_id, question_code)
);
create index sms_outbox_due_idx on sms_outbox (campaign_id, state, not_before, id);
create index sms_outbox_lease_idx on sms_outbox (state, lease_until);
-- reply matching: the most recent text to a number
create index sms_outbox_phone_idx on sms_outbox (phone, sent_at);

-- Numbers the provider refused to text (21211 invalid, 21614 not a mobile ...).
create table sms_bad_numbers (
    phone      text   primary key,
    code       bigint,
    reason     text   not null,
    created_at bigint not null
);

-- Every inbound text that was not a control keyword, once per MessageSid. What it became
-- (an answer, or an item for organiser review) is recorded on the row.
create table sms_replies (
    id            integer primary key,
    message_sid   text   not null unique,
    from_phone    text   not null,
    to_phone      text   not null,
    body          text   not null,
    campaign_id   bigint references campaigns (id),
    member_id     bigint references members (id),
    outbox_id     bigint references sms_outbox (id),
    question_code text,
    option_code   text,
    -- answered | review
    outcome       text   not null check (outcome in ('answered', 'review')),
    -- for review: ambiguous, unrecognised, unknown_number, shared_number, no_open_survey
    review_reason text,
    review_state  text   check (review_state in ('open', 'resolved', 'dismissed')),
    resolved_by   text,
    resolved_at   bigint,
    resolution_note text,
    created_at    bigint not null
);
create index sms_replies_review_idx on sms_replies (review_state, id);
