-- Foundation schema. Kept in step with migrations/sqlite/0001_foundation.sql: same
-- tables, columns, constraints and index names; only the id and type spellings differ.
-- Instants are unix milliseconds (bigint) in UTC; JSON documents are text; flags are
-- bigint 0/1 (sqlx's Any driver cannot carry SQLite booleans).

create table seats (
    id              bigint generated always as identity primary key,
    code            text    not null unique,
    name            text    not null,
    -- lower-cased, whitespace-collapsed name, for matching member files by name
    name_key        text    not null unique,
    nation          text    not null,
    region          text    not null,
    time_zone       text    not null default 'Europe/London',
    is_target       bigint  not null default 0 check (is_target in (0, 1)),
    weight          bigint  not null default 1 check (weight >= 0),
    -- per-seat limits: attempts per hour with a burst, and an optional daily cap
    rate_per_hour   bigint  check (rate_per_hour is null or rate_per_hour > 0),
    burst           bigint  check (burst is null or burst > 0),
    daily_cap       bigint  check (daily_cap is null or daily_cap > 0),
    winner_2024     text,
    second_2024     text,
    majority_2024   bigint,
    electorate_2024 bigint,
    valid_votes_2024 bigint,
    created_at      bigint  not null,
    updated_at      bigint  not null
);

create table members (
    id          bigint generated always as identity primary key,
    external_id text    not null unique,
    name        text    not null,
    phone       text    not null,
    seat_id     bigint  not null references seats (id),
    -- extra CSV columns, as a JSON object of strings
    attributes  text    not null default '{}',
    created_at  bigint  not null,
    updated_at  bigint  not null
);
create index members_phone_idx on members (phone);
create index members_seat_idx on members (seat_id, id);

-- Opt-outs, keyed by number rather than member: a STOP holds for every member who
-- shares the number and for every campaign.
create table suppressions (
    phone      text   primary key,
    reason     text   not null,
    source     text   not null,
    created_at bigint not null
);

-- Every add and remove, kept forever: re-opting a number in must be explainable.
create table suppression_audit (
    id         bigint generated always as identity primary key,
    phone      text   not null,
    action     text   not null check (action in ('add', 'remove')),
    source     text   not null,
    note       text,
    actor      text   not null,
    created_at bigint not null
);
create index suppression_audit_phone_idx on suppression_audit (phone, id);

create table campaigns (
    id            bigint generated always as identity primary key,
    name          text   not null,
    caller_number text   not null,
    status        text   not null default 'draft'
                  check (status in ('draft', 'active', 'paused', 'finished')),
    script        text   not null,
    calling_hours text   not null,
    retry_policy  text   not null,
    created_at    bigint not null,
    updated_at    bigint not null
);

create table volunteers (
    id         bigint generated always as identity primary key,
    name       text    not null,
    phone      text    not null unique,
    pin_hash   text    not null,
    team       text,
    active     bigint  not null default 1 check (active in (0, 1)),
    created_at bigint  not null,
    updated_at bigint  not null
);

-- One row per call (or call attempt) to a member. The claim (voice issue) creates it.
create table contact_attempts (
    id            bigint generated always as identity primary key,
    campaign_id   bigint  not null references campaigns (id),
    member_id     bigint  not null references members (id),
    volunteer_id  bigint  references volunteers (id),
    seat_id       bigint  not null references seats (id),
    -- leased -> dialling -> (answered) -> completed; or released / reconcile
    state         text    not null,
    disposition   text,
    member_call_sid text  unique,
    lease_token   text,
    lease_expires_at bigint,
    created_at    bigint  not null,
    ended_at      bigint
);
-- At most one open attempt per member per campaign, and one open lease per volunteer.
create unique index contact_attempts_open_member_idx
    on contact_attempts (campaign_id, member_id)
    where state in ('leased', 'dialling', 'answered', 'reconcile');
create unique index contact_attempts_open_volunteer_idx
    on contact_attempts (volunteer_id)
    where state in ('leased', 'dialling', 'answered');
create index contact_attempts_member_idx on contact_attempts (member_id, campaign_id);
create index contact_attempts_campaign_seat_idx on contact_attempts (campaign_id, seat_id);

-- Answers by option code (never free text), whether keyed on a call or texted back.
create table answers (
    id            bigint generated always as identity primary key,
    campaign_id   bigint not null references campaigns (id),
    member_id     bigint not null references members (id),
    attempt_id    bigint references contact_attempts (id),
    question_code text   not null,
    option_code   text   not null,
    source        text   not null check (source in ('keypad', 'sms', 'organiser')),
    -- provider id (MessageSid, CallSid + step) so redelivered webhooks store nothing twice
    dedupe_key    text   unique,
    created_at    bigint not null
);
create index answers_campaign_member_idx on answers (campaign_id, member_id);

create table api_tokens (
    id           bigint generated always as identity primary key,
    name         text   not null,
    token_hash   text   not null unique,
    created_at   bigint not null,
    last_used_at bigint,
    revoked_at   bigint
);
