/* Helpers shared by the recorder's test programs. */
#ifndef MMIOTRACE_TEST_COMMON_H
#define MMIOTRACE_TEST_COMMON_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Maps `len` bytes of `path` shared and read-write, creating and sizing the file. */
static volatile unsigned char *map_file(const char *path, size_t len)
{
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0) {
		perror(path);
		exit(2);
	}
	if (ftruncate(fd, (off_t)len) != 0) {
		perror("ftruncate");
		exit(2);
	}
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	close(fd);
	return (volatile unsigned char *)p;
}

#endif
