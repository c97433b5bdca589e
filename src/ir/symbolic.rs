//! Integer shape computations evaluated element by element: each element of a value
//! computed from `Shape` outputs and constants is a known number or "dim j of value v".
//! Shape inference reads Reshape targets through it, and `resolve_reshape_shapes` turns
//! the targets it resolves into constants.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::Result;
use crate::ir::value_type::Shapes;
use crate::ir::{DataType, Graph, Node, OpKind, Tensor, ValueId};

/// How many producers deep a shape computation is followed.
const MAX_DEPTH: usize = 32;

/// One element of an integer vector: a number, or dim `.1` of value `.0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Element {
    Known(i64),
    Dim(ValueId, usize),
}

/// An integer value of rank 0 (`scalar`) or 1, element by element.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Symbolic {
    pub scalar: bool,
    pub elements: Vec<Element>,
}

impl Symbolic {
    fn vector(elements: Vec<Element>) -> Symbolic {
        Symbolic {
            scalar: false,
            elements,
        }
    }

    fn constant(tensor: &Tensor) -> Option<Symbolic> {
        if tensor.dims().len() > 1 {
            return None;
        }
        let values = match tensor.to_i64() {
            Some(values) => values,
            None => integral(&tensor.to_f64()?)?,
        };
        Some(Symbolic {
            scalar: tensor.dims().is_empty(),
            elements: values.into_iter().map(Element::Known).collect(),
        })
    }

    /// All elements as numbers, when they all are.
    fn numbers(&self) -> Option<Vec<i64>> {
        self.elements
            .iter()
            .map(|e| match e {
                Element::Known(k) => Some(*k),
                Element::Dim(..) => None,
            })
            .collect()
    }
}

/// Float values that are all integers, as integers.
fn integral(values: &[f64]) -> Option<Vec<i64>> {
    values
        .iter()
        .map(|&v| (v.fract() == 0.0 && v.abs() < 2f64.powi(53)).then_some(v as i64))
        .collect()
}

/// `value` element by element, when a shape computation of at most `MAX_DEPTH`
/// producers computes it from constants and `Shape` outputs.
pub(crate) fn evaluate(graph: &Graph, shapes: &Shapes, value: ValueId) -> Result<Option<Symbolic>> {
    Evaluator::new(graph, shapes).value(value, MAX_DEPTH)
}

struct Evaluator<'g> {
    graph: &'g Graph,
    shapes: &'g Shapes,
    /// Values already evaluated: a computation that reads a value twice costs it once.
    known: RefCell<HashMap<ValueId, Option<Symbolic>>>,
}

impl<'g> Evaluator<'g> {
    fn new(graph: &'g Graph, shapes: &'g Shapes) -> Evaluator<'g> {
        Evaluator {
            graph,
            shapes,
            known: RefCell::default(),
        }
    }

    /// `value` element by element, following at most `depth` producers.
    fn value(&self, value: ValueId, depth: usize) -> Result<Option<Symbolic>> {
        if let Some(known) = self.known.borrow().get(&value) {
            return Ok(known.clone());
        }
        let symbolic = self.evaluate(value, depth)?;
        self.known.borrow_mut().insert(value, symbolic.clone());
        Ok(symbolic)
    }

    fn evaluate(&self, value: ValueId, depth: usize) -> Result<Option<Symbolic>> {
        if let Some(tensor) = self.graph.constant(value) {
            return Ok(Symbolic::constant(tensor));
        }
        let Some(id) = self.graph.producer(value).filter(|_| depth > 0) else {
            return Ok(None);
        };
        let node = self.graph.node(id);
        match node.kind {
            OpKind::Shape => return self.shape(node),
            OpKind::Constant => {
                return Ok(node.tensor("value")?.as_ref().and_then(Symbolic::constant));
            }
            _ => {}
        }
        let mut operands = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            operands.push(match input {
                None => None,
                Some(v) => match self.value(*v, depth - 1)? {
                    Some(symbolic) => Some(symbolic),
                    None => return Ok(None),
                },
            });
        }
        operation(node, &operands)
    }

    fn shape(&self, node: &Node) -> Result<Option<Symbolic>> {
        let Some(x) = node.input(0) else {
            return Ok(None);
        };
        let Some(dims) = self.shapes.get(x).dims.as_ref() else {
            return Ok(None);
        };
        let rank = dims.len() as i64;
        let clamp = |axis: i64| (if axis < 0 { axis + rank } else { axis }).clamp(0, rank) as usize;
        let start = clamp(node.int("start")?.unwrap_or(0));
        let end = clamp(node.int("end")?.unwrap_or(rank)).max(start);
        let elements = (start..end)
            .map(|axis| match dims[axis].known() {
                Some(d) => Element::Known(d as i64),
                None => Element::Dim(x, axis),
            })
            .collect();
        Ok(Some(Symbolic::vector(elements)))
    }
}

/// One operator of a shape computation on symbolic operands (`None` where an optional
/// input is absent).
fn operation(node: &Node, operands: &[Option<Symbolic>]) -> Result<Option<Symbolic>> {
    let operand = |slot: usize| operands.get(slot).and_then(Option::as_ref);
    let numbers = |slot: usize| operand(slot).and_then(Symbolic::numbers);
    let along_first_axis = |axis: Option<i64>| matches!(axis.unwrap_or(0), 0 | -1);
    let Some(first) = operand(0) else {
        return Ok(None);
    };
    Ok(match node.kind {
        OpKind::Identity => Some(first.clone()),
        OpKind::Cast => keeps_integers(node.int("to")?).then(|| first.clone()),
        OpKind::Gather if along_first_axis(node.int("axis")?) && !first.scalar => {
            operand(1).and_then(|indices| gather(first, indices))
        }
        OpKind::Unsqueeze => {
            let axes = node.ints("axes")?.or_else(|| numbers(1));
            (first.scalar && axes.is_some_and(|a| a == [0] || a == [-1]))
                .then(|| Symbolic::vector(first.elements.clone()))
        }
        OpKind::Squeeze => {
            let axes = node.ints("axes")?.or_else(|| numbers(1));
            let squeezable = !first.scalar
                && first.elements.len() == 1
                && axes.is_none_or(|a| a == [0] || a == [-1]);
            squeezable.then(|| Symbolic {
                scalar: true,
                elements: first.elements.clone(),
            })
        }
        OpKind::Concat if along_first_axis(node.int("axis")?) => {
            let parts: Option<Vec<&Symbolic>> = operands
                .iter()
                .map(|o| o.as_ref().filter(|s| !s.scalar))
                .collect();
            parts.map(|parts| {
                Symbolic::vector(
                    parts
                        .iter()
                        .flat_map(|p| p.elements.iter().copied())
                        .collect(),
                )
            })
        }
        OpKind::Slice if !first.scalar => {
            let starts = node.ints("starts")?.or_else(|| numbers(1));
            let ends = node.ints("ends")?.or_else(|| numbers(2));
            let axes = node.ints("axes")?.or_else(|| numbers(3));
            let steps = numbers(4).unwrap_or_else(|| vec![1]);
            match (starts.as_deref(), ends.as_deref(), steps.as_slice()) {
                (Some(&[start]), Some(&[end]), &[step])
                    if axes.is_none_or(|a| a == [0] || a == [-1]) =>
                {
                    slice(&first.elements, start, end, step).map(Symbolic::vector)
                }
                _ => None,
            }
        }
        OpKind::Add | OpKind::Sub | OpKind::Mul => {
            operand(1).and_then(|second| arithmetic(&node.kind, first, second))
        }
        _ => None,
    })
}

/// Cast targets that keep every integer a shape can hold.
fn keeps_integers(to: Option<i64>) -> bool {
    to.is_some_and(|code| {
        matches!(
            DataType::from_onnx(code as i32),
            DataType::Int32 | DataType::Int64 | DataType::Float | DataType::Double
        )
    })
}

fn gather(data: &Symbolic, indices: &Symbolic) -> Option<Symbolic> {
    let len = data.elements.len() as i64;
    let elements = indices
        .numbers()?
        .into_iter()
        .map(|i| {
            let i = if i < 0 { i + len } else { i };
            (0..len).contains(&i).then(|| data.elements[i as usize])
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Symbolic {
        scalar: indices.scalar,
        elements,
    })
}

/// Python-style slicing with ONNX clamping.
fn slice(elements: &[Element], start: i64, end: i64, step: i64) -> Option<Vec<Element>> {
    let len = elements.len() as i64;
    let from_end = |x: i64| if x < 0 { x.saturating_add(len) } else { x };
    let picked: Vec<i64> = match step {
        0 => return None,
        s if s > 0 => (from_end(start).clamp(0, len)..from_end(end).clamp(0, len))
            .step_by(s as usize)
            .collect(),
        s => {
            let (first, last) = (
                from_end(start).clamp(-1, len - 1),
                from_end(end).clamp(-1, len - 1),
            );
            (last + 1..=first)
                .rev()
                .step_by(s.unsigned_abs() as usize)
                .collect()
        }
    };
    Some(picked.into_iter().map(|i| elements[i as usize]).collect())
}

/// Element-wise integer arithmetic on numbers (one side may be a single element).
fn arithmetic(kind: &OpKind, a: &Symbolic, b: &Symbolic) -> Option<Symbolic> {
    let (x, y) = (a.numbers()?, b.numbers()?);
    let n = x.len().max(y.len());
    if (x.len() != n && x.len() != 1) || (y.len() != n && y.len() != 1) {
        return None;
    }
    let at = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let elements = (0..n)
        .map(|i| {
            let (p, q) = (at(&x, i), at(&y, i));
            let r = match kind {
                OpKind::Add => p.checked_add(q),
                OpKind::Sub => p.checked_sub(q),
                _ => p.checked_mul(q),
            };
            r.map(Element::Known)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Symbolic {
        scalar: a.scalar && b.scalar,
        elements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_gathers_count_from_the_end() {
        let e: Vec<Element> = (0..5).map(Element::Known).collect();
        let picked = |s, t, step| slice(&e, s, t, step).unwrap();
        assert_eq!(
            picked(-2, i64::MAX, 1),
            [Element::Known(3), Element::Known(4)]
        );
        assert_eq!(
            picked(-1, i64::MIN, -2),
            [Element::Known(4), Element::Known(2), Element::Known(0)]
        );
        let data = Symbolic::vector(e.clone());
        let last = Symbolic {
            scalar: true,
            elements: vec![Element::Known(-1)],
        };
        assert_eq!(
            gather(&data, &last),
            Some(Symbolic {
                scalar: true,
                elements: vec![Element::Known(4)]
            })
        );
    }
}
