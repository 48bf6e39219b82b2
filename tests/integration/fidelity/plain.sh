#!/bin/sh
echo "no directives: everything comes from the command line"
