//! An in-memory Auto Scaling group behind `mirror_aws::FleetApi`. Like AWS, it refuses a
//! desired capacity outside the group's min/max (`ValidationError`: "New SetDesiredCapacity
//! value 3 is above max value 2 for the AutoScalingGroup"; moto does not check it); a test can
//! make it refuse the next `SetDesiredCapacity` with any code (`ScalingActivityInProgress`, a
//! scale-in in the group's cooldown). Every `HonorCooldown` sent is recorded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use mirror_aws::error::AwsError;
use mirror_aws::fleet::{FleetApi, Group};

/// The fleet's group, if it exists, and how often its size was set.
#[derive(Default)]
pub struct FakeFleet {
    group: Mutex<Option<Group>>,
    set_calls: AtomicU64,
    /// `HonorCooldown` of every `SetDesiredCapacity`, in order.
    cooldowns: Mutex<Vec<bool>>,
    /// The code the next `SetDesiredCapacity` is refused with.
    refuse_next: Mutex<Option<&'static str>>,
}

impl FakeFleet {
    /// The group `name` with these bounds and desired capacity.
    pub fn with(name: &str, min: u32, max: u32, desired: u32) -> Self {
        FakeFleet {
            group: Mutex::new(Some(Group {
                name: name.into(),
                min_size: min,
                max_size: max,
                desired_capacity: desired,
                tags: BTreeMap::new(),
            })),
            ..FakeFleet::default()
        }
    }

    /// The next `SetDesiredCapacity` is refused with `code`.
    pub fn refuse_next(&self, code: &'static str) {
        *self.refuse_next.lock().unwrap() = Some(code);
    }

    /// `HonorCooldown` of every `SetDesiredCapacity` so far.
    pub fn cooldowns(&self) -> Vec<bool> {
        self.cooldowns.lock().unwrap().clone()
    }

    /// The group as it is now.
    pub fn group(&self) -> Group {
        self.group
            .lock()
            .unwrap()
            .clone()
            .expect("the group exists")
    }

    pub fn desired(&self) -> u32 {
        self.group().desired_capacity
    }

    /// `SetDesiredCapacity` calls so far.
    pub fn set_calls(&self) -> u64 {
        self.set_calls.load(Ordering::Relaxed)
    }

    fn update<T>(&self, f: impl FnOnce(&mut Group) -> T) -> T {
        f(self
            .group
            .lock()
            .unwrap()
            .as_mut()
            .expect("the group exists"))
    }
}

impl FleetApi for FakeFleet {
    async fn describe_group(&self, name: &str) -> Result<Option<Group>, AwsError> {
        Ok(self
            .group
            .lock()
            .unwrap()
            .clone()
            .filter(|g| g.name == name))
    }

    async fn set_desired_capacity(
        &self,
        _name: &str,
        desired: u32,
        honor_cooldown: bool,
    ) -> Result<(), AwsError> {
        self.set_calls.fetch_add(1, Ordering::Relaxed);
        self.cooldowns.lock().unwrap().push(honor_cooldown);
        if let Some(code) = self.refuse_next.lock().unwrap().take() {
            return Err(AwsError::classify(
                "SetDesiredCapacity",
                code,
                "refused by the test",
            ));
        }
        self.update(|g| {
            if desired < g.min_size || desired > g.max_size {
                return Err(AwsError::classify(
                    "SetDesiredCapacity",
                    "ValidationError",
                    "outside the group's min and max",
                ));
            }
            g.desired_capacity = desired;
            Ok(())
        })
    }

    async fn put_group_tag(&self, _name: &str, key: &str, value: &str) -> Result<(), AwsError> {
        self.update(|g| g.tags.insert(key.to_owned(), value.to_owned()));
        Ok(())
    }
}
