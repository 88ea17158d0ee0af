//! Access control inside the engine: which rows a session shows ([`tenancy`]: the tenant
//! filter below everything a query can add) and how much memory its queries may hold
//! ([`limits`]). Authentication lives with each front end; what it decides reaches the engine
//! as a [`tenancy::TenantScope`].

pub mod limits;
pub mod tenancy;
