//! DWARF call frame instruction opcodes (DWARF 5, section 6.4.2, and the GNU extensions that
//! `.eh_frame` uses), and the pointer encodings of `.eh_frame` (LSB, "DWARF Exception Header
//! Encoding").

// The primary opcodes: the high two bits, with an operand in the low six.
pub const DW_CFA_ADVANCE_LOC: u8 = 0x40;
pub const DW_CFA_OFFSET: u8 = 0x80;
pub const DW_CFA_RESTORE: u8 = 0xc0;

// The extended opcodes: the high two bits are 0.
pub const DW_CFA_NOP: u8 = 0x00;
pub const DW_CFA_ADVANCE_LOC1: u8 = 0x02;
pub const DW_CFA_ADVANCE_LOC2: u8 = 0x03;
pub const DW_CFA_ADVANCE_LOC4: u8 = 0x04;
pub const DW_CFA_OFFSET_EXTENDED: u8 = 0x05;
pub const DW_CFA_RESTORE_EXTENDED: u8 = 0x06;
pub const DW_CFA_UNDEFINED: u8 = 0x07;
pub const DW_CFA_SAME_VALUE: u8 = 0x08;
pub const DW_CFA_REGISTER: u8 = 0x09;
pub const DW_CFA_REMEMBER_STATE: u8 = 0x0a;
pub const DW_CFA_RESTORE_STATE: u8 = 0x0b;
pub const DW_CFA_DEF_CFA: u8 = 0x0c;
pub const DW_CFA_DEF_CFA_REGISTER: u8 = 0x0d;
pub const DW_CFA_DEF_CFA_OFFSET: u8 = 0x0e;
pub const DW_CFA_DEF_CFA_EXPRESSION: u8 = 0x0f;
pub const DW_CFA_EXPRESSION: u8 = 0x10;
pub const DW_CFA_OFFSET_EXTENDED_SF: u8 = 0x11;
pub const DW_CFA_DEF_CFA_SF: u8 = 0x12;
pub const DW_CFA_DEF_CFA_OFFSET_SF: u8 = 0x13;
pub const DW_CFA_VAL_OFFSET: u8 = 0x14;
pub const DW_CFA_VAL_OFFSET_SF: u8 = 0x15;
pub const DW_CFA_VAL_EXPRESSION: u8 = 0x16;
pub const DW_CFA_GNU_ARGS_SIZE: u8 = 0x2e;
pub const DW_CFA_GNU_NEGATIVE_OFFSET_EXTENDED: u8 = 0x2f;

// Pointer encodings: the value's format in the low four bits...
pub const DW_EH_PE_ABSPTR: u8 = 0x00;
pub const DW_EH_PE_ULEB128: u8 = 0x01;
pub const DW_EH_PE_UDATA2: u8 = 0x02;
pub const DW_EH_PE_UDATA4: u8 = 0x03;
pub const DW_EH_PE_UDATA8: u8 = 0x04;
pub const DW_EH_PE_SLEB128: u8 = 0x09;
pub const DW_EH_PE_SDATA2: u8 = 0x0a;
pub const DW_EH_PE_SDATA4: u8 = 0x0b;
pub const DW_EH_PE_SDATA8: u8 = 0x0c;
// ...what it is relative to in the next three...
pub const DW_EH_PE_PCREL: u8 = 0x10;
pub const DW_EH_PE_TEXTREL: u8 = 0x20;
pub const DW_EH_PE_DATAREL: u8 = 0x30;
// ...and whether it points at the value rather than being it.
pub const DW_EH_PE_INDIRECT: u8 = 0x80;
/// No value at all.
pub const DW_EH_PE_OMIT: u8 = 0xff;

// DWARF register numbers on x86_64 (System V psABI, figure 3.36).
pub const REG_RBP: u64 = 6;
pub const REG_RSP: u64 = 7;
/// The return address column.
pub const REG_RIP: u64 = 16;
