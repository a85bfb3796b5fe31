// SPDX-License-Identifier: GPL-2.0
/*
 * fsofault: make a stock kernel print real fault reports, to capture console logs for
 * vm/console.py's tests (see capture.py). Loading it with what=warn|oops|bug|hang triggers
 * a WARN_ON, a NULL-pointer write, a BUG(), or 8 s in uninterruptible sleep (a hung task
 * once hung_task_timeout_secs is lowered). Never load it anywhere that matters.
 */
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/string.h>

static char *what = "warn";
module_param(what, charp, 0444);

static int __init fsofault_init(void)
{
	if (!strcmp(what, "warn")) {
		WARN_ON(1);
	} else if (!strcmp(what, "oops")) {
		int *volatile p = NULL;
		*p = 1;
	} else if (!strcmp(what, "bug")) {
		BUG();
	} else if (!strcmp(what, "hang")) {
		schedule_timeout_uninterruptible(8 * HZ);
	}
	return 0;
}

static void __exit fsofault_exit(void)
{
}

module_init(fsofault_init);
module_exit(fsofault_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("trigger kernel fault reports for log capture");
