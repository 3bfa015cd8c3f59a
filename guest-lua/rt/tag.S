# The exception tag that longjmp throws and setjmp landing pads catch.
# Defined here because no libc in this toolchain provides it.
	.tagtype __c_longjmp i32
	.globl __c_longjmp
__c_longjmp:
