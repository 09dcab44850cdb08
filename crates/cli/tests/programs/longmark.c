/* A marker of LEN bytes ('m', then the last byte 'Z'), then "short".
 * Usage: longmark LEN */
#include <string.h>
#include "../../../../include/mmiotrace.h"
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	size_t len = (size_t)atol(argv[1]);
	char *text = malloc(len + 1);
	if (!text)
		return 2;
	memset(text, 'm', len);
	text[len - 1] = 'Z';
	text[len] = 0;
	mmiotrace_mark(text);
	mmiotrace_mark("short");
	free(text);
	return 0;
}
