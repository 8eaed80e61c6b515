//! The `with_*` builder setters of public configs.
//!
//! Every public config is `#[non_exhaustive]` with `new()` and one
//! `with_field(self, value) -> Self` per field, so it can grow without
//! breaking callers. Written out, each setter is five identical lines; the
//! macro states them once, so a config's `impl` block lists its plain
//! setters one line each and a reader sees at once which setters do more
//! (clamp, validate, convert) — those stay written out by hand.

/// Plain builder setters: `with_field => field: Type` expands to
/// `pub fn with_field(mut self, field: Type) -> Self`, documented as
/// "Set [`field`](Self::field)". Used inside an `impl` block.
///
/// ```
/// #[derive(Debug, Default)]
/// #[non_exhaustive]
/// pub struct Config {
///     /// How long to wait.
///     pub timeout: std::time::Duration,
///     /// How many at once.
///     pub limit: usize,
/// }
///
/// impl Config {
///     slotguard_core::setters! {
///         with_timeout => timeout: std::time::Duration,
///         with_limit => limit: usize,
///     }
/// }
///
/// let c = Config::default().with_limit(4);
/// assert_eq!(c.limit, 4);
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! setters {
    ($( $setter:ident => $field:ident : $ty:ty ),* $(,)?) => {
        $(
            #[doc = concat!("Set [`", stringify!($field), "`](Self::", stringify!($field), ").")]
            pub fn $setter(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}
