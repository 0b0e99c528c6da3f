//! The analysis condition language: the subset of expr-lang that Argo Rollouts users write in
//! `successCondition` / `failureCondition` (`result[0] >= 0.95`, `len(result) == 0 || ...`,
//! `result.canary.success_rate >= result.stable.success_rate - 0.01`). Parsed once when the
//! template loads, so anything outside the subset is refused with the template's file:line,
//! never discovered during a rollout.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Eval(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Str(String),
    Bool(bool),
    Nil,
    Result,
    Field(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(Box<Expr>, Op, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Func {
    Len,
    IsNaN,
    IsInf,
    Default,
    AsInt,
    AsFloat,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Sym(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, ExprError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    const SYMS: [&str; 19] = [
        "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "(", ")", "[",
        "]", ",",
    ];
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                i += 1;
            }
            let text = &src[start..i];
            let n = text
                .parse::<f64>()
                .map_err(|_| ExprError::Parse(format!("bad number {text:?}")))?;
            out.push(Tok::Num(n));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let quote = c;
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != quote {
                i += 1;
            }
            if i >= b.len() {
                return Err(ExprError::Parse("unterminated string".into()));
            }
            out.push(Tok::Str(src[start..i].to_string()));
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_string()));
            continue;
        }
        if c == b'.' {
            out.push(Tok::Sym("."));
            i += 1;
            continue;
        }
        match SYMS.iter().find(|s| src[i..].starts_with(**s)) {
            Some(s) => {
                out.push(Tok::Sym(s));
                i += s.len();
            }
            None => {
                return Err(ExprError::Parse(format!(
                    "unexpected {:?} at column {}",
                    c as char,
                    i + 1
                )));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), ExprError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(ExprError::Parse(format!(
                "expected {s:?}, found {}",
                self.describe()
            )))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end".into(),
            Some(Tok::Num(n)) => n.to_string(),
            Some(Tok::Str(s)) => format!("{s:?}"),
            Some(Tok::Ident(s)) => s.clone(),
            Some(Tok::Sym(s)) => format!("{s:?}"),
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.and()?;
        while self.eat_sym("||") || self.eat_word("or") {
            l = Expr::Binary(Box::new(l), Op::Or, Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.cmp()?;
        while self.eat_sym("&&") || self.eat_word("and") {
            l = Expr::Binary(Box::new(l), Op::And, Box::new(self.cmp()?));
        }
        Ok(l)
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let l = self.add()?;
        let op = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find(|(s, _)| self.eat_sym(s));
        match op {
            Some((_, op)) => Ok(Expr::Binary(Box::new(l), op, Box::new(self.add()?))),
            None => Ok(l),
        }
    }

    fn add(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.mul()?;
        loop {
            let op = if self.eat_sym("+") {
                Op::Add
            } else if self.eat_sym("-") {
                Op::Sub
            } else {
                return Ok(l);
            };
            l = Expr::Binary(Box::new(l), op, Box::new(self.mul()?));
        }
    }

    fn mul(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                Op::Mul
            } else if self.eat_sym("/") {
                Op::Div
            } else if self.eat_sym("%") {
                Op::Rem
            } else {
                return Ok(l);
            };
            l = Expr::Binary(Box::new(l), op, Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat_sym("!") || self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.primary()?;
        loop {
            if self.eat_sym(".") {
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Ident(name)) => {
                        self.pos += 1;
                        e = Expr::Field(Box::new(e), name);
                    }
                    _ => {
                        return Err(ExprError::Parse(format!(
                            "expected a field name after \".\", found {}",
                            self.describe()
                        )));
                    }
                }
            } else if self.eat_sym("[") {
                let idx = self.or()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or_else(|| ExprError::Parse("unexpected end of expression".into()))?;
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Sym("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(name) => {
                let func = match name.as_str() {
                    "result" => return Ok(Expr::Result),
                    "true" => return Ok(Expr::Bool(true)),
                    "false" => return Ok(Expr::Bool(false)),
                    "nil" => return Ok(Expr::Nil),
                    "len" => Func::Len,
                    "isNaN" => Func::IsNaN,
                    "isInf" => Func::IsInf,
                    "default" => Func::Default,
                    "asInt" => Func::AsInt,
                    "asFloat" => Func::AsFloat,
                    other => {
                        return Err(ExprError::Parse(format!(
                            "unknown name {other:?}: conditions may use result, len, isNaN, \
                             isInf, default, asInt, asFloat, true, false, nil"
                        )));
                    }
                };
                self.expect("(")?;
                let mut args = Vec::new();
                if !self.eat_sym(")") {
                    loop {
                        args.push(self.or()?);
                        if self.eat_sym(")") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                let want = if func == Func::Default { 2 } else { 1 };
                if args.len() != want {
                    return Err(ExprError::Parse(format!(
                        "{name} takes {want} argument(s), got {}",
                        args.len()
                    )));
                }
                Ok(Expr::Call(func, args))
            }
            Tok::Sym(s) => Err(ExprError::Parse(format!("unexpected {s:?}"))),
        }
    }
}

/// Parses a condition; anything outside the supported subset is an error.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let toks = tokenize(src)?;
    if toks.is_empty() {
        return Err(ExprError::Parse("empty condition".into()));
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(ExprError::Parse(format!(
            "unexpected {} after a complete expression",
            p.describe()
        )));
    }
    Ok(e)
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn truthy(v: &Value, what: &str) -> Result<bool, ExprError> {
    v.as_bool()
        .ok_or_else(|| ExprError::Eval(format!("{what} is {v}, not a boolean")))
}

fn number(n: f64) -> Value {
    // NaN and infinities have no JSON number; keep them as strings the functions recognise.
    serde_json::Number::from_f64(n).map_or_else(
        || {
            Value::String(
                if n.is_nan() {
                    "NaN"
                } else if n > 0.0 {
                    "+Inf"
                } else {
                    "-Inf"
                }
                .into(),
            )
        },
        Value::Number,
    )
}

/// A value as a float, NaN and infinities included.
fn float_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        Value::String(s) if s == "+Inf" => Some(f64::INFINITY),
        Value::String(s) if s == "-Inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

impl Expr {
    pub fn eval(&self, result: &Value) -> Result<Value, ExprError> {
        Ok(match self {
            Expr::Num(n) => number(*n),
            Expr::Str(s) => Value::String(s.clone()),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Nil => Value::Null,
            Expr::Result => result.clone(),
            Expr::Field(e, name) => match e.eval(result)? {
                Value::Object(m) => m.get(name).cloned().unwrap_or(Value::Null),
                other => {
                    return Err(ExprError::Eval(format!(
                        "cannot read field {name:?} of {other}"
                    )));
                }
            },
            Expr::Index(e, i) => {
                let base = e.eval(result)?;
                let idx = i.eval(result)?;
                match (&base, &idx) {
                    (Value::Array(a), _) => {
                        let n = num(&idx).ok_or_else(|| {
                            ExprError::Eval(format!("index {idx} is not a number"))
                        })?;
                        let len = a.len() as i64;
                        let k = n as i64;
                        let k = if k < 0 { k + len } else { k };
                        if k < 0 || k >= len {
                            return Err(ExprError::Eval(format!(
                                "index out of range: {n} (array of length {len})"
                            )));
                        }
                        a[k as usize].clone()
                    }
                    (Value::Object(m), Value::String(k)) => {
                        m.get(k).cloned().unwrap_or(Value::Null)
                    }
                    _ => return Err(ExprError::Eval(format!("cannot index {base} with {idx}"))),
                }
            }
            Expr::Not(e) => Value::Bool(!truthy(&e.eval(result)?, "the operand of !")?),
            Expr::Neg(e) => {
                let v = e.eval(result)?;
                number(-float_of(&v).ok_or_else(|| ExprError::Eval(format!("cannot negate {v}")))?)
            }
            Expr::Binary(l, Op::Or, r) => {
                let lv = truthy(&l.eval(result)?, "the left side of ||")?;
                Value::Bool(lv || truthy(&r.eval(result)?, "the right side of ||")?)
            }
            Expr::Binary(l, Op::And, r) => {
                let lv = truthy(&l.eval(result)?, "the left side of &&")?;
                Value::Bool(lv && truthy(&r.eval(result)?, "the right side of &&")?)
            }
            Expr::Binary(l, op, r) => binary(&l.eval(result)?, *op, &r.eval(result)?)?,
            Expr::Call(f, args) => call(*f, args, result)?,
        })
    }

    /// Evaluates to a boolean, as a condition must.
    pub fn holds(&self, result: &Value) -> Result<bool, ExprError> {
        truthy(&self.eval(result)?, "the condition")
    }
}

fn binary(l: &Value, op: Op, r: &Value) -> Result<Value, ExprError> {
    if let (Some(a), Some(b)) = (float_of(l), float_of(r)) {
        return Ok(match op {
            Op::Eq => Value::Bool(a == b),
            Op::Ne => Value::Bool(a != b),
            Op::Lt => Value::Bool(a < b),
            Op::Le => Value::Bool(a <= b),
            Op::Gt => Value::Bool(a > b),
            Op::Ge => Value::Bool(a >= b),
            Op::Add => number(a + b),
            Op::Sub => number(a - b),
            Op::Mul => number(a * b),
            Op::Div => number(a / b),
            Op::Rem => number(a % b),
            Op::And | Op::Or => unreachable_logic(),
        });
    }
    match op {
        Op::Eq => Ok(Value::Bool(l == r)),
        Op::Ne => Ok(Value::Bool(l != r)),
        Op::Add => match (l, r) {
            (Value::String(a), Value::String(b)) => Ok(Value::String(format!("{a}{b}"))),
            _ => Err(ExprError::Eval(format!("cannot add {l} and {r}"))),
        },
        _ => Err(ExprError::Eval(format!(
            "cannot compare or compute {l} and {r} (a value is missing or not a number)"
        ))),
    }
}

fn unreachable_logic() -> Value {
    // && and || are evaluated with short-circuit before reaching `binary`.
    Value::Null
}

fn call(f: Func, args: &[Expr], result: &Value) -> Result<Value, ExprError> {
    if f == Func::Default {
        let v = args[0].eval(result)?;
        return if v.is_null() {
            args[1].eval(result)
        } else {
            Ok(v)
        };
    }
    let v = args[0].eval(result)?;
    Ok(match f {
        Func::Len => Value::from(match &v {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            Value::String(s) => s.len(),
            _ => return Err(ExprError::Eval(format!("len of {v}"))),
        }),
        Func::IsNaN => Value::Bool(float_of(&v).is_some_and(f64::is_nan)),
        Func::IsInf => Value::Bool(float_of(&v).is_some_and(f64::is_infinite)),
        Func::AsInt => {
            let n = float_of(&v)
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| ExprError::Eval(format!("asInt of {v}")))?;
            Value::from(n.trunc() as i64)
        }
        Func::AsFloat => number(
            float_of(&v)
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| ExprError::Eval(format!("asFloat of {v}")))?,
        ),
        Func::Default => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(src: &str, result: Value) -> Result<bool, ExprError> {
        parse(src)?.holds(&result)
    }

    #[test]
    fn argo_users_conditions() {
        assert_eq!(check("result[0] >= 0.95", json!([0.97])), Ok(true));
        assert_eq!(check("result[0] >= 0.95", json!([0.90])), Ok(false));
        assert!(matches!(
            check("result[0] >= 0.95", json!([])),
            Err(ExprError::Eval(_))
        ));
        assert_eq!(
            check("len(result) == 0 || result[0] >= 0.95", json!([])),
            Ok(true)
        );
        assert_eq!(
            check("isNaN(result) || result >= 0.9", number(f64::NAN)),
            Ok(true)
        );
        assert_eq!(check("default(result, 0) < 5", json!(null)), Ok(true));
        let both = json!({"canary": {"success_rate": 0.985}, "stable": {"success_rate": 0.99}});
        assert_eq!(
            check(
                "result.canary.success_rate >= result.stable.success_rate - 0.01",
                both.clone()
            ),
            Ok(true)
        );
        assert_eq!(
            check("!(result.canary.success_rate < 0.5) and true", both),
            Ok(true)
        );
        assert_eq!(check("asInt(result) == 3", json!("3.7")), Ok(true));
        assert_eq!(check("asFloat(result) * 2 > 7", json!("3.7")), Ok(true));
        assert_eq!(
            check("result.status == 'ok'", json!({"status": "ok"})),
            Ok(true)
        );
    }

    #[test]
    fn outside_the_subset_is_refused_at_parse() {
        for bad in [
            "result[0] >= ",
            "foo(result)",
            "now() > 1",
            "result |> map(.x)",
            "result[0] >= 0.95 extra",
            "",
            "len(result, 1) > 0",
        ] {
            assert!(matches!(parse(bad), Err(ExprError::Parse(_))), "{bad:?}");
        }
    }
}
