//! VHDX log structures (MS-VHDX §2.3; FORMATS.md A.10).
