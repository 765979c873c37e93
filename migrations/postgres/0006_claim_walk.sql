-- The claim's fast phase leaves out a seat found with nobody eligible until this time
-- (unix ms); see src/store/claim.rs. A hint only: the full walk still looks at it.
alter table seat_schedule add column idle_until bigint not null default 0;
