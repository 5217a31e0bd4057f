//! Filters as the EC2 `Describe*` calls take them (`Name` + `Values`), read from the AWS CLI
//! shorthand ([`shorthand`]) and evaluated locally on the model with the server's rules: values
//! of one filter are OR-ed, filters are AND-ed, values may hold wildcards ([`pattern`]),
//! comparisons are case-sensitive, and a filter on a field the API did not return never
//! matches.
//!
//! The same filters are passed to the server by the adapter (`Filters` of
//! `DescribeNetworkInterfaces` / `DescribeInstances`); evaluating them here too keeps selection
//! checkable without a server and keeps an event run honest about its scope.
//!
//! One compiled type serves both resources: [`Filters<T>`] over a [`Filterable`] resource,
//! whose one table maps each filter name to the field it reads.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::model::{Eni, Instance, Tags};

pub mod pattern;
pub mod shorthand;

use pattern::Pattern;
pub use shorthand::{format_filter, format_filters, parse_filters};

/// One filter: a name and the values any of which may match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Filter {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Values")]
    pub values: Vec<String>,
}

impl Filter {
    /// A filter from a name and values.
    pub fn new(
        name: impl Into<String>,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

/// Which API a filter list is for (the set of valid filter names differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterResource {
    /// `DescribeNetworkInterfaces`.
    NetworkInterface,
    /// `DescribeInstances`.
    Instance,
}

impl FilterResource {
    /// Human name used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterResource::NetworkInterface => "network interface",
            FilterResource::Instance => "instance",
        }
    }
}

/// Why a filter string (or a filter) was rejected. Every variant names the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unterminated quote in `{token}`")]
    UnterminatedQuote { token: String },
    #[error("expected `Name=...` or `Values=...` at `{token}`")]
    ExpectedKey { token: String },
    #[error("unknown key `{key}` in `{token}` (expected `Name` or `Values`)")]
    UnknownKey { key: String, token: String },
    #[error("key `{key}` given twice in `{token}`")]
    DuplicateKey { key: String, token: String },
    #[error("filter `{token}` has no `Name=`")]
    MissingName { token: String },
    #[error("filter `{token}` has no `Values=`")]
    MissingValues { token: String },
    #[error("filter `{token}` has an empty name")]
    EmptyName { token: String },
    #[error("filter `{token}` has an empty value")]
    EmptyValue { token: String },
    #[error("invalid JSON filter list: {message}")]
    Json { message: String },
    #[error("unknown {} filter name `{name}`", resource.as_str())]
    UnknownName {
        name: String,
        resource: FilterResource,
    },
}

/// A resource the filters evaluate on: one table of (filter name, field it reads), plus its
/// tags for `tag:<key>` and `tag-key`.
pub trait Filterable: 'static {
    /// Which API the filter names belong to.
    const RESOURCE: FilterResource;
    /// Every filter name evaluated locally besides `tag:<key>` and `tag-key`, with the field
    /// it reads (`None`: the API did not return the field, and the filter never matches).
    const FIELDS: &'static [(&'static str, Field<Self>)];
    /// The resource's tags.
    fn tags(&self) -> &Tags;
}

/// Reads one field of a resource for a filter.
pub type Field<T> = fn(&T) -> Option<&str>;

fn bool_str(b: Option<bool>) -> Option<&'static str> {
    b.map(|b| if b { "true" } else { "false" })
}

/// `DescribeNetworkInterfaces` filter names.
impl Filterable for Eni {
    const RESOURCE: FilterResource = FilterResource::NetworkInterface;
    const FIELDS: &'static [(&'static str, Field<Self>)] = &[
        ("network-interface-id", |e| Some(&e.id)),
        ("subnet-id", |e| Some(&e.subnet_id)),
        ("vpc-id", |e| Some(&e.vpc_id)),
        ("availability-zone", |e| e.availability_zone.as_deref()),
        ("interface-type", |e| Some(&e.interface_type)),
        ("description", |e| Some(&e.description)),
        ("status", |e| e.status.as_deref()),
        ("requester-id", |e| e.requester_id.as_deref()),
        ("requester-managed", |e| bool_str(e.requester_managed)),
        ("attachment.instance-id", |e| {
            e.attachment_instance_id.as_deref()
        }),
        ("attachment.instance-owner-id", |e| {
            e.attachment_instance_owner_id.as_deref()
        }),
    ];

    fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// `DescribeInstances` filter names.
impl Filterable for Instance {
    const RESOURCE: FilterResource = FilterResource::Instance;
    const FIELDS: &'static [(&'static str, Field<Self>)] = &[
        ("instance-id", |i| Some(&i.id)),
        ("instance-type", |i| Some(&i.instance_type)),
        ("availability-zone", |i| i.availability_zone.as_deref()),
        ("subnet-id", |i| i.subnet_id.as_deref()),
        ("vpc-id", |i| i.vpc_id.as_deref()),
        ("instance-state-name", |i| i.state.as_deref()),
    ];

    fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// What a compiled filter reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// The field at this index of [`Filterable::FIELDS`].
    Field(usize),
    /// `tag:<key>`: the value of that tag.
    Tag(String),
    /// `tag-key`: any tag key.
    TagKeys,
}

impl Key {
    fn parse<T: Filterable>(name: &str) -> Option<Key> {
        if name == "tag-key" {
            return Some(Key::TagKeys);
        }
        if let Some(key) = name.strip_prefix("tag:") {
            return (!key.is_empty()).then(|| Key::Tag(key.to_owned()));
        }
        T::FIELDS
            .iter()
            .position(|(n, _)| *n == name)
            .map(Key::Field)
    }
}

fn any_matches(patterns: &[Pattern], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

/// A validated, compiled list of filters on `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters<T> {
    raw: Vec<Filter>,
    compiled: Vec<(Key, Vec<Pattern>)>,
    resource: PhantomData<fn(&T)>,
}

/// Network-interface filters (`MIRROR_ENI_FILTERS`).
pub type EniFilters = Filters<Eni>;
/// Instance filters (`MIRROR_INSTANCE_FILTERS`).
pub type InstanceFilters = Filters<Instance>;

impl<T> Default for Filters<T> {
    fn default() -> Self {
        Self {
            raw: Vec::new(),
            compiled: Vec::new(),
            resource: PhantomData,
        }
    }
}

impl<T: Filterable> Filters<T> {
    /// Validates the names (an unknown name is [`FilterError::UnknownName`]) and compiles.
    pub fn new(filters: Vec<Filter>) -> Result<Self, FilterError> {
        let compiled = filters
            .iter()
            .map(|f| {
                let key = Key::parse::<T>(&f.name).ok_or_else(|| FilterError::UnknownName {
                    name: f.name.clone(),
                    resource: T::RESOURCE,
                })?;
                Ok((key, f.values.iter().map(|v| Pattern::compile(v)).collect()))
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(Self {
            raw: filters,
            compiled,
            resource: PhantomData,
        })
    }

    /// Parses the shorthand and validates it.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        Self::new(parse_filters(input)?)
    }

    /// Every filter name understood besides `tag:<key>`.
    pub fn names() -> impl Iterator<Item = &'static str> {
        T::FIELDS.iter().map(|(name, _)| *name).chain(["tag-key"])
    }

    /// The filters as given: what the adapter passes to the server.
    pub fn filters(&self) -> &[Filter] {
        &self.raw
    }

    /// True when no filter is configured.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Server semantics: every filter matches (an empty list matches everything — the
    /// selection treats an empty list as "not configured" instead).
    pub fn matches(&self, item: &T) -> bool {
        self.compiled.iter().all(|(key, patterns)| match key {
            Key::Field(i) => any_matches(patterns, (T::FIELDS[*i].1)(item)),
            Key::Tag(k) => any_matches(patterns, item.tags().get(k).map(String::as_str)),
            Key::TagKeys => item.tags().keys().any(|k| any_matches(patterns, Some(k))),
        })
    }
}

#[cfg(test)]
mod tests;
