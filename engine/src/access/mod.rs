//! Access control: who may log in and which tenants they see and write ([`users`], the users
//! file), one login policy for every port ([`logins`]: hashing, lockout), which rows a session
//! shows ([`tenancy`]: the tenant filter below everything a query can add) and how much memory
//! its queries may hold ([`limits`]). Each front end speaks its own protocol's authentication
//! (Flight SQL's Handshake and tokens, HTTP Basic) on top of [`logins`], over TLS from [`tls`]
//! where the server has a certificate; what it decides reaches the engine as a
//! [`tenancy::TenantScope`].

pub mod limits;
pub mod logins;
pub mod tenancy;
pub mod tls;
pub mod users;
