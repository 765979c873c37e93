-- Voice: the per-campaign call queue, volunteer call sessions, provider event dedupe and
-- call-back requests. Kept in step with migrations/sqlite/0002_voice.sql.

-- One row per member per campaign. The claim moves a row ready -> leased; the end of
-- an attempt moves it to done, or back to ready with not_before = the retry gap.
create table call_queue (
    id          bigint generated always as identity primary key,
    campaign_id bigint not null references campaigns (id),
    member_id   bigint not null references members (id),
    seat_id     bigint not null references seats (id),
    -- copied from the member so the claim can check suppressions and shared numbers
    -- without a join
    phone       text   not null,
    time_zone   text   not null,
    -- higher first: target seats (the targeting issue refines this)
    priority    bigint not null default 0,
    state       text   not null default 'ready'
                check (state in ('ready', 'leased', 'done', 'suppressed')),
    not_before  bigint not null default 0,
    attempts    bigint not null default 0,
    queued_at   bigint not null,
    updated_at  bigint not null,
    unique (campaign_id, member_id)
);
-- The claim walks this index in order and stops at the first eligible row.
create index call_queue_ready_idx
    on call_queue (campaign_id, priority desc, not_before, id) where state = 'ready';
create index call_queue_phone_idx on call_queue (phone);
create index call_queue_seat_idx on call_queue (seat_id);
-- A number shared by two members is one contact: never two live calls to it.
create unique index call_queue_leased_phone_idx
    on call_queue (campaign_id, phone) where state = 'leased';

create index seats_time_zone_idx on seats (time_zone);

-- One row per volunteer phone call (dial-in or call-back), keyed by the provider's CallSid.
create table volunteer_sessions (
    id           bigint generated always as identity primary key,
    call_sid     text   not null unique,
    from_phone   text   not null,
    volunteer_id bigint references volunteers (id),
    campaign_id  bigint references campaigns (id),
    state        text   not null default 'pin'
                 check (state in ('pin', 'choosing', 'active', 'ended')),
    pin_failures bigint not null default 0,
    callback_id  bigint,
    created_at   bigint not null,
    updated_at   bigint not null,
    ended_at     bigint
);
create index volunteer_sessions_from_idx on volunteer_sessions (from_phone, created_at);

alter table contact_attempts add column session_id bigint references volunteer_sessions (id);
alter table contact_attempts add column queue_id bigint references call_queue (id);
-- answers keyed so far, as a JSON list of [question_code, option_code], until saved
alter table contact_attempts add column keyed text not null default '[]';
-- how the member leg ended: <Dial action> DialCallStatus and the leg's own callbacks
alter table contact_attempts add column dial_status text;
alter table contact_attempts add column member_status text;
alter table contact_attempts add column member_seq bigint;
alter table contact_attempts add column dial_seconds bigint;
create index contact_attempts_session_idx on contact_attempts (session_id);
create index contact_attempts_open_expiry_idx on contact_attempts (state, lease_expires_at);

-- Provider events already applied (CallSid + status + sequence, ...): duplicates stop here.
create table provider_events (
    dedupe_key text   primary key,
    created_at bigint not null
);

-- "Call me": a request to ring a volunteer through the REST API.
create table callback_requests (
    id              bigint generated always as identity primary key,
    volunteer_id    bigint not null references volunteers (id),
    campaign_id     bigint references campaigns (id),
    idempotency_key text   unique,
    status          text   not null
                    check (status in ('pending', 'placed', 'failed', 'uncertain')),
    call_sid        text   unique,
    error_code      bigint,
    error_message   text,
    created_at      bigint not null,
    updated_at      bigint not null
);
