//! A session script's reply: a status word and its values, as the scripts of
//! `src/sessions/lua/` send them.

use redis::Value;

use crate::sessions::SessionError;

/// A script's reply: a status word and its values.
pub(super) struct Reply {
    pub(super) status: String,
    pub(super) values: Vec<Value>,
}

impl Reply {
    /// Reads `v`, an array whose first item is the status.
    pub(super) fn parse(v: Value) -> Result<Self, SessionError> {
        let Value::Array(mut items) = v else {
            return Err(SessionError::Unavailable(
                "unexpected script reply shape".into(),
            ));
        };
        if items.is_empty() {
            return Err(SessionError::Unavailable("empty script reply".into()));
        }
        let status = redis::from_redis_value(items.remove(0))?;
        Ok(Self {
            status,
            values: items,
        })
    }

    pub(super) fn string(&mut self, i: usize) -> Result<String, SessionError> {
        let v = self
            .values
            .get_mut(i)
            .map_or(Value::Nil, |v| std::mem::replace(v, Value::Nil));
        Ok(redis::from_redis_value::<Option<String>>(v)?.unwrap_or_default())
    }

    /// Value `i` as a whole number (a time in ms, written by a script).
    pub(super) fn int(&mut self, i: usize) -> Result<i64, SessionError> {
        self.string(i)?
            .parse()
            .map_err(|_| SessionError::Unavailable("unexpected script reply".into()))
    }

    /// Value `i` as a count (a Lua number, sent as an integer), 0 when there is none.
    pub(super) fn count(&self, i: usize) -> Result<u64, SessionError> {
        match self.values.get(i) {
            None | Some(Value::Nil) => Ok(0),
            Some(Value::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
            Some(_) => Err(SessionError::Unavailable("unexpected script reply".into())),
        }
    }

    /// The operation's own reply inside the prelude's `{'kept', dropped, reply...}`,
    /// and how many older records made room for the one kept; `None` when no record
    /// was written (no key, a failed operation, or a replay).
    pub(super) fn unwrap_kept(self) -> Result<(Self, Option<u64>), SessionError> {
        if self.status != "kept" {
            return Ok((self, None));
        }
        let mut wrapper = self;
        let dropped = wrapper.count(0)?;
        let reply = Self::parse(Value::Array(wrapper.values.split_off(1)))?;
        Ok((reply, Some(dropped)))
    }
}
