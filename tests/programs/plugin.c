/* plugin.c: a shared library that dlopener.c loads at run time. Its .bss is large enough to
 * get an anonymous mapping of its own from the loader. */
static char scratch[1 << 20];
int plugin_answer(void) { scratch[0] = 42; return scratch[0]; }
