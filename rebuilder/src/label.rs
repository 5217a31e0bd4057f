//! Closed label sets: enums whose values become metric labels or CLI words.
//!
//! Every closed set of the crate (and of its test kit) is declared with [`label_enum!`], so
//! they all offer the same things: `ALL` (every value, in declaration order), `as_str()` (the
//! stable label), `from_label()` and `Display`. Tests, benchmarks and the metrics registry
//! iterate `ALL` instead of retyping the lists.

/// Declares a closed set of labels: `Name => "label"` per variant.
///
/// ```
/// rebuilder::label_enum! {
///     /// Colours.
///     pub enum Colour {
///         /// Red.
///         Red => "red",
///         /// Dark blue.
///         DarkBlue => "dark_blue",
///     }
/// }
/// assert_eq!(Colour::ALL, [Colour::Red, Colour::DarkBlue]);
/// assert_eq!(Colour::DarkBlue.as_str(), "dark_blue");
/// assert_eq!(Colour::from_label("red"), Some(Colour::Red));
/// ```
#[macro_export]
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($name::$variant),*].len()] = [$($name::$variant),*];

            /// The stable label of this value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )*
                }
            }

            /// The value whose label is `label`.
            pub fn from_label(label: &str) -> Option<$name> {
                $name::ALL.into_iter().find(|v| v.as_str() == label)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
