//! The provider boundary: webhook signatures, TwiML, and the REST client. Nothing here
//! knows about campaigns or members; `http::webhooks` and `voice` speak to the provider
//! through it.

pub mod rest;
pub mod signature;
pub mod twiml;

pub use rest::{MessageResource, NewCall, NewMessage, RestClient, RestError};
pub use twiml::{Dial, Gather, Twiml};
