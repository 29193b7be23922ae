//! Loading: finding the traces of a run and sorting them into processes and images ([`tree`]),
//! reading one trace into a [`read::Recording`] or streaming its events ([`read`]), and the
//! kernel's map text ([`maps`]). Nothing here attributes or renders.

pub mod maps;
pub mod par;
pub mod read;
pub mod tree;
